package frontend

import (
	"context"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// retryMiddleware tries a request again, up to maxRetries more times, when it failed without an answer (network
// error) or with a 5xx. A 4xx is the querier's verdict on the request and is never retried. Between tries it
// waits 10ms, doubling, at most 1s.
func retryMiddleware(maxRetries int, m *frontendMetrics, logger log.Logger) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, r *Request) (*Response, error) {
			backoff := 10 * time.Millisecond
			for try := 0; ; try++ {
				resp, err := next.Do(ctx, r)
				if ctx.Err() != nil || try >= maxRetries || !retryable(resp, err) {
					return resp, err
				}
				m.retries.Inc()
				level.Debug(logger).Log("msg", "retrying a failed downstream request", "path", r.Path, "try", try+1, "err", err, "status", statusOf(resp))
				t := time.NewTimer(backoff)
				select {
				case <-ctx.Done():
					t.Stop()
					return resp, err
				case <-t.C:
				}
				backoff = min(2*backoff, time.Second)
			}
		})
	}
}

func retryable(resp *Response, err error) bool {
	return err != nil || resp == nil || resp.StatusCode >= 500
}

func statusOf(resp *Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}
