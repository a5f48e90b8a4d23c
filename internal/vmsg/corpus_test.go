package vmsg

// seed is one FuzzDecode input: the message kind and its CBOR body.
type seed struct {
	kind byte
	body []byte
}

func (s seed) args() []any { return []any{s.kind, s.body} }
