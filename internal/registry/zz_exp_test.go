package registry_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/internal/testenv/procs"
)

func BenchmarkZZConns(b *testing.B) {
	bins := procs.Build(b)
	cluster := procs.StartCluster(b, bins, 1)
	url := cluster.Nodes[0].ClientURL()
	ctx := context.Background()
	for _, nconn := range []int{1, 2, 4, 16, 1, 4} {
		ncs := make([]*nats.Conn, nconn)
		kvs := make([]jetstream.KeyValue, 16)
		for i := range ncs {
			ncs[i], _ = nats.Connect(url)
		}
		js0, _ := jetstream.New(ncs[0])
		name := fmt.Sprintf("zz%d_%d", nconn, b.N)
		js0.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: name, History: 1, Storage: jetstream.FileStorage})
		for g := range kvs {
			js, _ := jetstream.New(ncs[g%nconn])
			kvs[g], _ = js.KeyValue(ctx, name)
		}
		val := []byte(strings.Repeat("x", 600))
		rate := parallelKV(b, 16, 20000, func(g, i int) error {
			_, err := kvs[g].Put(ctx, fmt.Sprintf("c%07d", i), val)
			return err
		})
		fmt.Printf("%d conns: %.0f puts/s\n", nconn, rate)
		js0.DeleteKeyValue(ctx, name)
		for _, nc := range ncs {
			nc.Close()
		}
	}
}
