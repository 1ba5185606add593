package fusefs

import (
	"context"
	"time"
)

// requestContext adapts go-fuse's per-request cancel channel (closed when
// the kernel interrupts the request) to a context.Context, without a
// goroutine per request.
type requestContext struct {
	cancel <-chan struct{}
}

func newContext(cancel <-chan struct{}) context.Context {
	if cancel == nil {
		return context.Background()
	}
	return requestContext{cancel}
}

func (requestContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c requestContext) Done() <-chan struct{}     { return c.cancel }
func (requestContext) Value(any) any               { return nil }

func (c requestContext) Err() error {
	select {
	case <-c.cancel:
		return context.Canceled
	default:
		return nil
	}
}
