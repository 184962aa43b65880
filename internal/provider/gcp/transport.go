package gcp

import (
	"context"
	"crypto/tls"

	"cloud.google.com/go/auth"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// clientOptions point a Google gRPC client at the endpoint with creds:
//   - no endpoint: Google's default endpoint of the client, TLS;
//   - https://host:port: that host, TLS (tlsConfig if given, else system roots);
//   - http://host:port: plaintext gRPC (emulators, fakes), the access token
//     still sent as "authorization: Bearer" metadata.
func clientOptions(ep endpoint, creds *auth.Credentials, tlsConfig *tls.Config) []option.ClientOption {
	switch ep.scheme {
	case "http":
		return []option.ClientOption{
			option.WithEndpoint(ep.host),
			option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
			option.WithGRPCDialOption(grpc.WithPerRPCCredentials(bearer{tp: creds.TokenProvider})),
		}
	case "https":
		opts := []option.ClientOption{option.WithEndpoint(ep.host), option.WithAuthCredentials(creds)}
		if tlsConfig != nil {
			opts = append(opts, option.WithGRPCDialOption(grpc.WithTransportCredentials(grpccreds.NewTLS(tlsConfig))))
		}
		return opts
	default:
		return []option.ClientOption{option.WithAuthCredentials(creds)}
	}
}

// bearer sends the token of tp as "authorization: Bearer" metadata without
// requiring transport security, for plaintext emulator endpoints. (gRPC's own
// oauth credentials refuse to run without TLS.)
type bearer struct {
	tp auth.TokenProvider
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b bearer) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	t, err := b.tp.Token(ctx)
	if err != nil {
		return nil, err
	}
	typ := t.Type
	if typ == "" {
		typ = "Bearer"
	}
	return map[string]string{"authorization": typ + " " + t.Value}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (bearer) RequireTransportSecurity() bool { return false }
