package rules

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Pos is a position in the SQL text: line and column, both from 1 (the
// column counts characters, not bytes).
type Pos struct {
	Line, Col int
}

func (p Pos) String() string { return fmt.Sprintf("line %d, col %d", p.Line, p.Col) }

// SyntaxError is an error in a rule's SQL, at a position.
type SyntaxError struct {
	Pos Pos
	Msg string
}

func (e *SyntaxError) Error() string { return e.Pos.String() + ": " + e.Msg }

type tokKind int

const (
	tEOF tokKind = iota
	tIdent
	tNumber
	tString
	tOp // punctuation and operators
)

type token struct {
	kind tokKind
	text string // identifier, operator, number text or unquoted string
	pos  Pos
	// quote is the quote character of a string token.
	quote byte
}

func (t token) String() string {
	switch t.kind {
	case tEOF:
		return "end of input"
	case tString:
		return fmt.Sprintf("string %c%s%c", t.quote, t.text, t.quote)
	}
	return fmt.Sprintf("%q", t.text)
}

// maxSQL bounds the length of a rule's SQL text.
const maxSQL = 64 << 10

// lex splits src into tokens.
func lex(src string) ([]token, error) {
	if len(src) > maxSQL {
		return nil, &SyntaxError{Pos{1, 1}, fmt.Sprintf("the SQL is %d bytes, more than %d", len(src), maxSQL)}
	}
	if !utf8.ValidString(src) {
		return nil, &SyntaxError{Pos{1, 1}, "the SQL is not valid UTF-8"}
	}
	var toks []token
	line, col := 1, 1
	i := 0
	adv := func(n int) {
		for _, r := range src[i : i+n] {
			if r == '\n' {
				line++
				col = 1
			} else {
				col++
			}
		}
		i += n
	}
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			adv(1)
			continue
		case c == '-' && strings.HasPrefix(src[i:], "--"): // comment to end of line
			n := strings.IndexByte(src[i:], '\n')
			if n < 0 {
				n = len(src) - i
			}
			adv(n)
			continue
		}
		p := Pos{line, col}
		switch {
		case c == '\'' || c == '"':
			var b strings.Builder
			j := i + 1
			closed := false
			for j < len(src) {
				if src[j] == c {
					if j+1 < len(src) && src[j+1] == c { // doubled quote
						b.WriteByte(c)
						j += 2
						continue
					}
					closed = true
					break
				}
				if src[j] == '\\' && j+1 < len(src) {
					switch src[j+1] {
					case 'n':
						b.WriteByte('\n')
					case 't':
						b.WriteByte('\t')
					case '\\', '\'', '"':
						b.WriteByte(src[j+1])
					default:
						b.WriteByte('\\')
						b.WriteByte(src[j+1])
					}
					j += 2
					continue
				}
				b.WriteByte(src[j])
				j++
			}
			if !closed {
				return nil, &SyntaxError{p, "unterminated string"}
			}
			toks = append(toks, token{kind: tString, text: b.String(), pos: p, quote: c})
			adv(j + 1 - i)
		case c >= '0' && c <= '9':
			j := i
			for j < len(src) && (isDigit(src[j]) || src[j] == '.' || src[j] == 'e' || src[j] == 'E' ||
				((src[j] == '+' || src[j] == '-') && (src[j-1] == 'e' || src[j-1] == 'E'))) {
				j++
			}
			toks = append(toks, token{kind: tNumber, text: src[i:j], pos: p})
			adv(j - i)
		case c == '_' || c == '$' || c < utf8.RuneSelf && unicode.IsLetter(rune(c)):
			j := i
			for j < len(src) && (src[j] == '_' || src[j] == '$' || isDigit(src[j]) || src[j] < utf8.RuneSelf && unicode.IsLetter(rune(src[j]))) {
				j++
			}
			toks = append(toks, token{kind: tIdent, text: src[i:j], pos: p})
			adv(j - i)
		default:
			op, n := "", 0
			for _, o := range []string{"<=", ">=", "<>", "!=", "=~", "==", "=", "<", ">", "(", ")", "[", "]", ",", ".", "*", "+", "-", "/", "%"} {
				if strings.HasPrefix(src[i:], o) {
					op, n = o, len(o)
					break
				}
			}
			if op == "" {
				r, _ := utf8.DecodeRuneInString(src[i:])
				return nil, &SyntaxError{p, fmt.Sprintf("unexpected character %q", r)}
			}
			if op == "==" {
				op = "="
			}
			if op == "<>" {
				op = "!="
			}
			toks = append(toks, token{kind: tOp, text: op, pos: p})
			adv(n)
		}
	}
	toks = append(toks, token{kind: tEOF, pos: Pos{line, col}})
	return toks, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
