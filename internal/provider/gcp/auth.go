package gcp

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials"
	"cloud.google.com/go/compute/metadata"
	iamcredentials "cloud.google.com/go/iam/credentials/apiv1"
	"cloud.google.com/go/iam/credentials/apiv1/credentialspb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/metrics"
)

// detectOptions are the options of the library's credentials: their own
// cache refreshes in step with ours (same early window, blocking), so when
// our tokenCache asks for a new token the library fetches one.
func (p *Provider) detectOptions(scopes []string) *credentials.DetectOptions {
	return &credentials.DetectOptions{
		Scopes:              scopes,
		EarlyTokenRefresh:   p.set.earlyRefresh,
		DisableAsyncRefresh: true,
	}
}

// keyCredentials builds credentials from a service-account JSON key; the
// token endpoint is the key's token_uri.
func (p *Provider) keyCredentials(key []byte, scopes []string) (*auth.Credentials, error) {
	creds, err := credentials.NewCredentialsFromJSON(credentials.ServiceAccount, key, p.detectOptions(scopes))
	if err != nil {
		return nil, events.Errorf(events.CodeBadRequest, "gcp.service_account_key: not a usable service-account key")
	}
	return p.cached(creds), nil
}

// checkKey parses the key's identity and private key, so an unusable key is
// reported when the connection is built, not on first use.
func checkKey(raw []byte) (*ServiceAccountKey, error) {
	k, err := ParseServiceAccountKey(raw)
	if err != nil {
		return nil, err
	}
	if k.Type != "service_account" || k.ClientEmail == "" {
		return nil, events.Errorf(events.CodeBadRequest, "gcp.service_account_key: not a service-account key")
	}
	block, _ := pem.Decode([]byte(k.PrivateKey))
	if block == nil {
		return nil, events.Errorf(events.CodeBadRequest, "gcp.service_account_key.private_key: not a PEM private key")
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
			return nil, events.Errorf(events.CodeBadRequest, "gcp.service_account_key.private_key: not an RSA private key")
		}
	}
	return k, nil
}

func (p *Provider) initKey() error {
	k, err := checkKey(p.cfg.ServiceAccountKey)
	if err != nil {
		return err
	}
	p.key = p.cfg.ServiceAccountKey
	p.identity = k.ClientEmail
	if p.project == "" {
		p.project = k.ProjectID
	}
	p.creds, err = p.keyCredentials(p.key, []string{CloudPlatformScope})
	return err
}

func (p *Provider) initDefault(ctx context.Context) error {
	creds, err := credentials.DetectDefault(p.detectOptions([]string{CloudPlatformScope}))
	if err != nil {
		return fmt.Errorf("finding application default credentials: %w",
			events.Wrap(events.CodeUnavailable, err, "no application default credentials on this worker"))
	}
	p.creds = p.cached(creds)
	p.identity = adcIdentity(creds)
	if p.project == "" && len(creds.JSON()) > 0 {
		// From the credentials file only: the metadata server is asked lazily.
		p.project, _ = creds.ProjectID(ctx)
	}
	return nil
}

// onMetadata is the identity of credentials that come from the metadata
// server, until the server has been asked for the email.
const onMetadata = "the instance's default service account (metadata server)"

// adcIdentity names who Application Default Credentials act as, from the
// credentials file; on GCE it is the instance's default service account.
func adcIdentity(creds *auth.Credentials) string {
	b := creds.JSON()
	if len(b) == 0 {
		return onMetadata
	}
	var f struct {
		Type           string `json:"type"`
		ClientEmail    string `json:"client_email"`
		ImpersonateURL string `json:"service_account_impersonation_url"`
	}
	_ = json.Unmarshal(b, &f)
	switch {
	case f.ClientEmail != "":
		return f.ClientEmail
	case f.ImpersonateURL != "":
		if m := impersonateURLRE.FindStringSubmatch(f.ImpersonateURL); m != nil {
			return m[1]
		}
	}
	if f.Type != "" {
		return "application default credentials of type " + f.Type
	}
	return "application default credentials"
}

// metadataEmail replaces an onMetadata identity by the email the metadata
// server reports, keeping the placeholder if it cannot be asked.
func metadataEmail(ctx context.Context, who string) string {
	if who != onMetadata {
		return who
	}
	email, err := metadata.EmailWithContext(ctx, "default")
	if err != nil || email == "" {
		return who
	}
	return email
}

var impersonateURLRE = regexp.MustCompile(`serviceAccounts/([^/:]+@[^/:]+):generateAccessToken`)

func (p *Provider) initImpersonation(ctx context.Context) error {
	var caller *auth.Credentials
	var err error
	if len(p.cfg.ServiceAccountKey) > 0 {
		k, err := checkKey(p.cfg.ServiceAccountKey)
		if err != nil {
			return err
		}
		p.key = p.cfg.ServiceAccountKey
		p.caller = k.ClientEmail
		if caller, err = p.keyCredentials(p.key, []string{CloudPlatformScope}); err != nil {
			return err
		}
	} else {
		caller, err = credentials.DetectDefault(p.detectOptions([]string{CloudPlatformScope}))
		if err != nil {
			return fmt.Errorf("finding application default credentials: %w",
				events.Wrap(events.CodeUnavailable, err, "no application default credentials on this worker to impersonate with"))
		}
		p.caller = adcIdentity(caller)
		caller = p.cached(caller)
	}
	iam, err := iamcredentials.NewIamCredentialsClient(ctx, clientOptions(p.endpoint, caller, p.set.tlsConfig)...)
	if err != nil {
		return fmt.Errorf("creating IAM Credentials client: %w", events.Wrap(events.CodeInternal, err, "cannot create the IAM Credentials client"))
	}
	iam.CallOptions.GenerateAccessToken = nil
	p.iam = iam
	p.callerCreds = caller
	p.identity = p.cfg.Impersonate
	if p.project == "" {
		p.project = projectOfAccount(p.cfg.Impersonate)
	}
	p.creds = auth.NewCredentials(&auth.CredentialsOptions{
		TokenProvider: newTokenCache(p.impersonator(caller, []string{CloudPlatformScope}, MaxTokenLifetime), p.set.earlyRefresh, p.log),
	})
	return nil
}

func (p *Provider) impersonator(caller *auth.Credentials, scopes []string, lifetime time.Duration) *impersonator {
	return &impersonator{iam: p.iam, caller: caller, callerName: p.caller, target: p.cfg.Impersonate,
		delegates: p.cfg.Delegates, scopes: scopes, lifetime: lifetime}
}

// projectOfAccount is the project of a user-managed service account
// (name@project.iam.gserviceaccount.com), or "".
func projectOfAccount(email string) string {
	_, domain, ok := strings.Cut(email, "@")
	if !ok {
		return ""
	}
	project, rest, ok := strings.Cut(domain, ".")
	if !ok || rest != "iam.gserviceaccount.com" {
		return ""
	}
	return project
}

// impersonator is a token provider that asks IAM Credentials
// generateAccessToken for a token of the target service account, as the
// caller, through the delegates.
type impersonator struct {
	iam        tokenGenerator
	caller     *auth.Credentials
	callerName string
	target     string
	delegates  []string
	scopes     []string
	lifetime   time.Duration
}

// Token implements auth.TokenProvider. Its errors carry wire codes.
func (im *impersonator) Token(ctx context.Context) (*auth.Token, error) {
	// The caller's own token first, so its failure is reported as such.
	if _, err := im.caller.TokenProvider.Token(ctx); err != nil {
		return nil, fmt.Errorf("getting the caller's token (%s): %w", im.callerName, classifyTokenError(err))
	}
	req := &credentialspb.GenerateAccessTokenRequest{
		Name:     "projects/-/serviceAccounts/" + im.target,
		Scope:    im.scopes,
		Lifetime: durationpb.New(im.lifetime),
	}
	for _, d := range im.delegates {
		req.Delegates = append(req.Delegates, "projects/-/serviceAccounts/"+d)
	}
	start := time.Now()
	resp, err := im.iam.GenerateAccessToken(ctx, req)
	if err != nil {
		err = fmt.Errorf("impersonating %s as %s: %w", im.target, im.callerName, impersonationError(ctx, err))
	}
	metrics.ObserveUpstream("gcp", "GenerateAccessToken", start, err)
	if err != nil {
		return nil, err
	}
	return &auth.Token{Value: resp.GetAccessToken(), Type: "Bearer", Expiry: resp.GetExpireTime().AsTime()}, nil
}

// impersonationError maps a generateAccessToken failure to a wire error.
func impersonationError(ctx context.Context, err error) error {
	switch status.Code(err) {
	case codes.PermissionDenied:
		return events.Wrap(events.CodeForbidden, err, "generateAccessToken denied: the caller needs roles/iam.serviceAccountTokenCreator on the target and on every delegate")
	case codes.NotFound:
		return events.Wrap(events.CodeForbidden, err, "generateAccessToken: the service account does not exist")
	case codes.Unauthenticated:
		return events.Wrap(events.CodeUnauthorized, err, "IAM Credentials rejected the caller's credentials")
	case codes.InvalidArgument:
		return events.Wrap(events.CodeBadRequest, err, "IAM Credentials rejected the request (service account, delegates, scopes or lifetime)")
	}
	return grpcError(ctx, err, "IAM Credentials")
}

// classifyTokenError maps a failure to get an access token to a wire error
// whose message carries no key material and no response body.
func classifyTokenError(err error) error {
	var we *events.Error
	if errors.As(err, &we) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return events.Wrap(events.CodeTimeout, err, "the token request ran past the deadline")
	}
	if errors.Is(err, context.Canceled) {
		return events.Wrap(events.CodeUnavailable, err, "the token request was cancelled")
	}
	var ae *auth.Error
	if errors.As(err, &ae) && ae.Response != nil {
		code := oauthErrorCode(ae.Body)
		switch sc := ae.Response.StatusCode; {
		case sc == 400 || sc == 401:
			return events.Wrap(events.CodeUnauthorized, err, "the token endpoint rejected the credentials (HTTP %d%s)", sc, code)
		case sc == 403:
			return events.Wrap(events.CodeForbidden, err, "the token endpoint refused the credentials (HTTP 403%s)", code)
		case sc == 429:
			return events.Wrap(events.CodeThrottled, err, "the token endpoint throttled the request (HTTP 429)")
		default:
			return events.Wrap(events.CodeUnavailable, err, "the token endpoint failed (HTTP %d)", sc)
		}
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return events.Wrap(events.CodeUnavailable, err, "the token endpoint is unreachable")
	}
	return events.Wrap(events.CodeUnauthorized, err, "the credentials cannot produce an access token")
}

var oauthCodeRE = regexp.MustCompile(`^[a-z_]{1,64}$`)

// oauthErrorCode is ", <error>" for an OAuth error body such as
// {"error":"invalid_grant"}; descriptions are not repeated.
func oauthErrorCode(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && oauthCodeRE.MatchString(e.Error) {
		return ", " + e.Error
	}
	return ""
}
