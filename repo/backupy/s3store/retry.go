package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/backupfs/backupfs/repo/backupy"
)

// Backoff between attempts: doubling from backoffBase up to backoffMax,
// each wait drawn at random from its upper half, so that many readers
// throttled at once do not come back at once.
const (
	backoffBase = 100 * time.Millisecond
	backoffMax  = 3 * time.Second
)

// errStalled is an attempt that made no progress for StallTimeout.
var errStalled = errors.New("no progress")

// retry runs op until it succeeds, fails in a way retrying cannot change,
// or Options.Timeout has passed since the first attempt. Each attempt
// gets its own context, which op's watchdog (see object.go) may cancel
// with errStalled as the cause.
func (s *Store) retry(ctx context.Context, what string, op func(ctx context.Context, alive func()) error) error {
	deadline := time.Now().Add(s.opts.Timeout)
	var last error
	for attempt := 0; ; attempt++ {
		err, stalled := s.attempt(ctx, deadline, op)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		client := s.client.Load()
		if region := redirectRegion(err); region != "" && region != client.Options().Region && attempt == 0 {
			s.log.Info("backupy: the bucket is in another region", "store", s.name, "region", region)
			s.client.CompareAndSwap(client, s3.New(client.Options(), func(o *s3.Options) { o.Region = region }))
			continue
		}
		if !stalled {
			if final := s.classify(what, err); final != nil {
				return final
			}
		}
		last = err
		wait := backoff(attempt)
		if time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("%s: %s: %w within %v (last: %v)", s.name, what, ErrUnreachable, s.opts.Timeout, errorLine(last))
		}
		s.log.Debug("backupy: S3 request failed; retrying", "store", s.name, "op", what, "attempt", attempt+1, "wait", wait, "err", errorLine(err))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		}
	}
}

// attempt runs op once under a watchdog: the attempt is cancelled when
// StallTimeout passes without op calling alive (op calls it whenever it
// makes progress), or at the operation's deadline. stalled reports that
// the watchdog or the deadline, not the caller, ended it.
func (s *Store) attempt(ctx context.Context, deadline time.Time, op func(context.Context, func()) error) (err error, stalled bool) {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	dctx, dcancel := context.WithDeadlineCause(actx, deadline, errStalled)
	defer dcancel()
	watchdog := time.AfterFunc(s.opts.StallTimeout, func() { cancel(errStalled) })
	defer watchdog.Stop()
	err = op(dctx, func() { watchdog.Reset(s.opts.StallTimeout) })
	stalled = ctx.Err() == nil && dctx.Err() != nil
	if stalled && err != nil {
		err = fmt.Errorf("%w for %v: %w", errStalled, s.opts.StallTimeout, err)
	}
	return err, stalled
}

func backoff(attempt int) time.Duration {
	d := backoffMax
	if attempt < 16 {
		d = min(backoffBase<<attempt, backoffMax)
	}
	return d/2 + rand.N(d/2+1)
}

// classify returns nil for an error worth retrying, and otherwise the
// error the operation fails with: ErrNotFound, ErrChanged, or a
// *ServiceError.
func (s *Store) classify(what string, err error) error {
	var ae smithy.APIError
	status := httpStatus(err)
	code := ""
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	switch {
	case status == http.StatusPreconditionFailed || code == "PreconditionFailed":
		return fmt.Errorf("%s: %w", s.name, backupy.ErrChanged)
	case what == "GetObject" && (code == "NoSuchKey" || status == http.StatusNotFound && code == ""):
		return fmt.Errorf("%s: %w", s.name, backupy.ErrNotFound)
	case errors.Is(err, ErrBadAnswer), errors.Is(err, backupy.ErrChanged):
		return err
	case status >= 200 && status < 300:
		// An answer that came but does not parse.
		return fmt.Errorf("%s: %s: %w: %s", s.name, what, ErrBadAnswer, errorLine(err))
	case status == http.StatusTooManyRequests || status >= 500 || retryableCode[code]:
		return nil
	case status != 0 || ae != nil:
		se := &ServiceError{Store: s.name, Op: what, Status: status, Code: code}
		if ae != nil {
			se.Message = ae.ErrorMessage()
		}
		if se.Code == "" {
			se.Code = http.StatusText(status)
		}
		return se
	case transient(err):
		return nil
	}
	// No answer at all and not a network error: credentials that cannot
	// be had, an endpoint that does not parse. Retrying changes nothing.
	return fmt.Errorf("%s: %s: %s", s.name, what, errorLine(err))
}

// retryableCode are S3 error codes of answers that may differ next time.
var retryableCode = map[string]bool{
	"SlowDown": true, "Throttling": true, "ThrottlingException": true, "RequestLimitExceeded": true,
	"RequestTimeout": true, "RequestTimeTooSkewed": false, "InternalError": true, "ServiceUnavailable": true,
}

// transient reports network failures: resets, refused or timed-out
// connections, bodies cut short.
func transient(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) ||
		errors.Is(err, errStalled) || errors.Is(err, context.DeadlineExceeded)
}

func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// redirectRegion returns the region AWS says a bucket is in, when it
// answered a request signed for another region with a redirect.
func redirectRegion(err error) string {
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.Response == nil {
		return ""
	}
	switch re.HTTPStatusCode() {
	case http.StatusMovedPermanently, http.StatusBadRequest:
		return re.Response.Header.Get("X-Amz-Bucket-Region")
	}
	return ""
}

// errorLine shortens the SDK's error chain to what it says last, which is
// what a user can act on; a *ServiceError says it all already.
func errorLine(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if st := httpStatus(err); st != 0 {
			return fmt.Sprintf("%s: %s (HTTP %d)", ae.ErrorCode(), ae.ErrorMessage(), st)
		}
		return fmt.Sprintf("%s: %s", ae.ErrorCode(), ae.ErrorMessage())
	}
	var oe *smithy.OperationError
	if errors.As(err, &oe) {
		return oe.Err.Error()
	}
	return err.Error()
}
