package s3store

import (
	"context"
	"fmt"
	"io"

	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// maxAnswer bounds the body of any answer the SDK reads itself: a page of
// a listing (at most 1,000 keys and prefixes of at most 1 KiB each, about
// 1.3 MB with their XML) or an error document. Object bodies are read by the store, never beyond what
// it asked for. A service sending more is broken or hostile; the read
// fails rather than the process growing without bound.
const maxAnswer = 4 << 20

// limitAnswers is an SDK option that cuts every answer's body at
// maxAnswer. It sits innermost in the deserialize step, so the SDK's own
// decoders read the limited body.
func limitAnswers(stack *middleware.Stack) error {
	return stack.Deserialize.Add(middleware.DeserializeMiddlewareFunc("backupfsLimitAnswer",
		func(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (middleware.DeserializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleDeserialize(ctx, in)
			if resp, ok := out.RawResponse.(*smithyhttp.Response); ok && resp != nil && resp.Body != nil {
				resp.Body = &limitedBody{rc: resp.Body, left: maxAnswer}
			}
			return out, md, err
		}), middleware.After)
}

// limitedBody fails a read past its limit.
type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, fmt.Errorf("%w: an answer of more than %d bytes", ErrBadAnswer, maxAnswer)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
