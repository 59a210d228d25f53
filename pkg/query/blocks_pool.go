package query

import (
	"sync"

	"github.com/efficientgo/core/errors"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

// GatewayPool keeps one gRPC connection per store-gateway address.
type GatewayPool struct {
	opts []grpc.DialOption

	mtx     sync.Mutex
	conns   map[string]*grpc.ClientConn
	clients map[string]storepb.StoreClient
}

// NewGatewayPool returns an empty pool dialling with store.DialOptions plus opts.
func NewGatewayPool(opts ...grpc.DialOption) *GatewayPool {
	return &GatewayPool{
		opts:    append(store.DialOptions(), opts...),
		conns:   map[string]*grpc.ClientConn{},
		clients: map[string]storepb.StoreClient{},
	}
}

// Dial returns the StoreAPI client of the gateway at addr, connecting (lazily, as grpc.NewClient does) the first
// time.
func (p *GatewayPool) Dial(addr string) (storepb.StoreClient, error) {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	if c, ok := p.clients[addr]; ok {
		return c, nil
	}
	conn, err := grpc.NewClient(addr, p.opts...)
	if err != nil {
		return nil, errors.Wrapf(err, "dial store-gateway %s", addr)
	}
	c := storepb.NewStoreClient(conn)
	p.conns[addr], p.clients[addr] = conn, c
	return c, nil
}

// Close closes every connection of the pool.
func (p *GatewayPool) Close() error {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	var firstErr error
	for addr, conn := range p.conns {
		if err := conn.Close(); err != nil && firstErr == nil {
			firstErr = errors.Wrapf(err, "close connection to store-gateway %s", addr)
		}
	}
	p.conns = map[string]*grpc.ClientConn{}
	p.clients = map[string]storepb.StoreClient{}
	return firstErr
}
