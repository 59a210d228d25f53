package server

import (
	"bytes"
	"net/http"
	"strings"

	"github.com/efficientgo/core/errors"
	"go.yaml.in/yaml/v3"
)

// secretWords make a YAML key secret wherever they stand in it (secret_key, password, credentials).
var secretWords = map[string]bool{"secret": true, "password": true, "passwd": true, "credential": true, "credentials": true}

// keyQualifiers make a key ending in "key" secret (private_key, api_key, access_key, storage_account_key).
var keyQualifiers = map[string]bool{"private": true, "api": true, "access": true, "account": true, "storage": true}

const masked = "********"

// MarshalMasked renders cfg as YAML with the values of secret-looking keys replaced by "********", however
// deep they are (an inline objstore config is a free-form map, so this looks at keys, not at Go types).
func MarshalMasked(cfg any) ([]byte, error) {
	var n yaml.Node
	if err := n.Encode(cfg); err != nil {
		return nil, errors.Wrap(err, "encode config")
	}
	maskNode(&n)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, errors.Wrap(err, "marshal config")
	}
	return buf.Bytes(), nil
}

func maskNode(n *yaml.Node) {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind == yaml.ScalarNode && v.Value != "" && isSecretKey(k.Value) {
				v.Value, v.Tag, v.Style = masked, "!!str", 0
				continue
			}
			maskNode(v)
		}
		return
	}
	for _, c := range n.Content {
		maskNode(c)
	}
}

// isSecretKey decides by the words of a key: "sas_token" and "bearer_token" are secret, "num_tokens" is not.
func isSecretKey(k string) bool {
	words := strings.FieldsFunc(strings.ToLower(k), func(r rune) bool { return r == '_' || r == '-' || r == '.' })
	if len(words) == 0 {
		return false
	}
	if k == "service_account" {
		return true
	}
	for _, w := range words {
		if secretWords[w] {
			return true
		}
	}
	switch last := words[len(words)-1]; last {
	case "token":
		return true
	case "key":
		for _, w := range words[:len(words)-1] {
			if keyQualifiers[w] {
				return true
			}
		}
	}
	return false
}

// ConfigHandler serves the effective config as YAML with secrets masked.
func ConfigHandler(cfg func() any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		out, err := MarshalMasked(cfg())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/yaml; charset=utf-8")
		_, _ = w.Write(out)
	})
}
