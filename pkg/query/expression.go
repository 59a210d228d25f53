package query

import (
	"fmt"
	"net/http"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/stratametrics/strata/pkg/tenancy"
)

// ExpressionLimits bound a PromQL expression before Prometheus's parser sees it. The parser and the engine
// recurse once per level of the expression tree (a query nested 100,000 deep overflows the goroutine stack and
// kills the process), and the parser takes time quadratic in the length of an operator chain such as
// `1+1+…+1` (100,000 terms: half a minute, not cancellable). Bounding nesting and tokens bounds both, whatever
// the tenant's max_query_expression_size_bytes.
type ExpressionLimits struct {
	// MaxDepth is the deepest nesting of (), {} and [] an expression may have.
	MaxDepth int `yaml:"max_expression_depth"`
	// MaxTokens is the most PromQL tokens (names, numbers, strings, operators, brackets, …) it may have.
	MaxTokens int `yaml:"max_expression_tokens"`
}

// DefaultExpressionLimits leave room for any hand-written or generated query seen in practice: the parser
// takes ~0.3 s for the worst case of 10,000 tokens (one operator chain).
func DefaultExpressionLimits() ExpressionLimits {
	return ExpressionLimits{MaxDepth: 512, MaxTokens: 10_000}
}

// checkExpression refuses an expression over the tenant's max_query_expression_size_bytes (0: no limit) or over
// the querier's expression limits. It only lexes, in one pass without recursion, and stops at the first limit
// crossed, so it costs at most the expression's length. A lexing error is left to the parser to report.
func checkExpression(expr string, maxBytes int, l ExpressionLimits) *tenancy.Error {
	if maxBytes > 0 && len(expr) > maxBytes {
		return tenancy.NewMaxQueryExpressionSizeBytesError(len(expr), maxBytes)
	}
	lex := parser.Lex(expr)
	depth, tokens := 0, 0
	var it parser.Item
	for {
		lex.NextItem(&it)
		switch it.Typ {
		case parser.EOF, parser.ERROR:
			return nil
		case parser.LEFT_PAREN, parser.LEFT_BRACE, parser.LEFT_BRACKET:
			depth++
		case parser.RIGHT_PAREN, parser.RIGHT_BRACE, parser.RIGHT_BRACKET:
			depth--
		}
		tokens++
		if l.MaxDepth > 0 && depth > l.MaxDepth {
			return &tenancy.Error{Status: http.StatusBadRequest, Msg: fmt.Sprintf(
				"the query expression nests deeper than the limit of %d levels of (), {} and []; to adjust the limit, configure querier.engine.max_expression_depth (--query.max-expression-depth)", l.MaxDepth)}
		}
		if l.MaxTokens > 0 && tokens > l.MaxTokens {
			return &tenancy.Error{Status: http.StatusBadRequest, Msg: fmt.Sprintf(
				"the query expression has more than the limit of %d tokens (names, numbers, strings, operators and brackets); to adjust the limit, configure querier.engine.max_expression_tokens (--query.max-expression-tokens)", l.MaxTokens)}
		}
	}
}
