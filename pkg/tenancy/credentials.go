package tenancy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"

	"github.com/efficientgo/core/errors"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"
)

const (
	// AuthNone turns built-in authentication off (the default): the tenant header alone decides the tenant.
	AuthNone = "none"
	// AuthBasic accepts HTTP basic auth credentials (Authorization: Basic …) checked against bcrypt hashes.
	AuthBasic = "basic"
	// AuthBearer accepts bearer tokens (Authorization: Bearer …) checked against their SHA-256 hashes.
	AuthBearer = "bearer"

	// AnyTenant in a credential's write or read list allows every tenant (an admin).
	AnyTenant = "*"

	// maxCredentialsFileBytes bounds the credentials file read at each reload.
	maxCredentialsFileBytes = 4 << 20
)

// Access is what a request does with a tenant's data.
type Access int

const (
	// Read is a query, a StoreAPI read, metadata, a tenant's stats or limits.
	Read Access = iota
	// Write is a push (remote write, OTLP).
	Write
)

func (a Access) String() string {
	if a == Write {
		return "write"
	}
	return "read"
}

// BasicAuth is a basic-auth user of a credential: the password is stored as a bcrypt hash only.
type BasicAuth struct {
	Username       string `yaml:"username"`
	PasswordBcrypt string `yaml:"password_bcrypt"`
}

// Credential is one entry of the credentials file: a secret (a basic-auth user or a bearer token's SHA-256)
// and the tenants it may write and read ("*": every tenant).
type Credential struct {
	// Name identifies the credential in logs and metrics; never the secret.
	Name              string     `yaml:"name"`
	BasicAuth         *BasicAuth `yaml:"basic_auth,omitempty"`
	BearerTokenSHA256 string     `yaml:"bearer_token_sha256,omitempty"`
	Write             []string   `yaml:"write,omitempty"`
	Read              []string   `yaml:"read,omitempty"`

	tokenHash []byte // BearerTokenSHA256 decoded
}

// tenants returns the credential's tenant list for an access.
func (c *Credential) tenants(a Access) []string {
	if a == Write {
		return c.Write
	}
	return c.Read
}

// Allows reports whether the credential may access tenant.
func (c *Credential) Allows(a Access, tenant string) bool {
	ts := c.tenants(a)
	return slices.Contains(ts, AnyTenant) || slices.Contains(ts, tenant)
}

// soleTenant returns the only tenant the credential may access, when there is exactly one and it is not "*":
// the tenant of a request of this credential that names none.
func (c *Credential) soleTenant(a Access) (string, bool) {
	ts := c.tenants(a)
	if len(ts) == 1 && ts[0] != AnyTenant {
		return ts[0], true
	}
	return "", false
}

// IsAdmin reports whether the credential may read every tenant: it may see the status pages naming tenants.
func (c *Credential) IsAdmin() bool { return slices.Contains(c.Read, AnyTenant) }

// CredentialsFile is the content of auth.credentials_file.
type CredentialsFile struct {
	Credentials []*Credential `yaml:"credentials"`
}

// credentialSet is a validated credentials file, indexed for lookups. It is never modified once built.
type credentialSet struct {
	byUser map[string]*Credential
	bearer []*Credential
	count  int
}

// parseCredentials parses and validates a credentials file for an auth type (basic or bearer): at least one
// credential (an empty file is more likely a file being rewritten than a wish to refuse everyone), each with a
// unique name, exactly one secret of the type's kind (a valid bcrypt hash, or 64 hex digits of SHA-256), and
// tenants that are valid tenant IDs or "*".
func parseCredentials(data []byte, authType string) (*credentialSet, error) {
	var f CredentialsFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, errEOF) {
		return nil, errors.Wrap(err, "parse credentials file")
	}
	if len(f.Credentials) == 0 {
		return nil, errors.New("the credentials file holds no credential")
	}
	set := &credentialSet{byUser: map[string]*Credential{}, count: len(f.Credentials)}
	names := map[string]bool{}
	tokens := map[string]bool{}
	for i, c := range f.Credentials {
		if c == nil {
			return nil, errors.Newf("credential %d is empty", i+1)
		}
		if strings.TrimSpace(c.Name) == "" {
			return nil, errors.Newf("credential %d has no name", i+1)
		}
		if names[c.Name] {
			return nil, errors.Newf("credential name %q is used twice", c.Name)
		}
		names[c.Name] = true
		if err := validateCredentialTenants(c); err != nil {
			return nil, err
		}
		switch {
		case c.BasicAuth != nil && c.BearerTokenSHA256 != "":
			return nil, errors.Newf("credential %q has both basic_auth and bearer_token_sha256; give one", c.Name)
		case c.BasicAuth != nil:
			if authType != AuthBasic {
				return nil, errors.Newf("credential %q has basic_auth but auth.type is %s", c.Name, authType)
			}
			if c.BasicAuth.Username == "" || strings.Contains(c.BasicAuth.Username, ":") {
				return nil, errors.Newf("credential %q: basic_auth.username must be non-empty and without ':'", c.Name)
			}
			if _, err := bcrypt.Cost([]byte(c.BasicAuth.PasswordBcrypt)); err != nil {
				return nil, errors.Wrapf(err, "credential %q: basic_auth.password_bcrypt is not a bcrypt hash (make one with htpasswd -nbBC 10 user password)", c.Name)
			}
			if set.byUser[c.BasicAuth.Username] != nil {
				return nil, errors.Newf("credential %q: basic_auth.username %q is used twice", c.Name, c.BasicAuth.Username)
			}
			set.byUser[c.BasicAuth.Username] = c
		case c.BearerTokenSHA256 != "":
			if authType != AuthBearer {
				return nil, errors.Newf("credential %q has bearer_token_sha256 but auth.type is %s", c.Name, authType)
			}
			h, err := hex.DecodeString(c.BearerTokenSHA256)
			if err != nil || len(h) != sha256.Size {
				return nil, errors.Newf("credential %q: bearer_token_sha256 must be 64 hex digits (printf %%s \"$TOKEN\" | sha256sum)", c.Name)
			}
			key := string(h)
			if tokens[key] {
				return nil, errors.Newf("credential %q: its bearer token is used by another credential", c.Name)
			}
			tokens[key] = true
			c.tokenHash = h
			set.bearer = append(set.bearer, c)
		default:
			return nil, errors.Newf("credential %q has neither basic_auth nor bearer_token_sha256", c.Name)
		}
	}
	return set, nil
}

func validateCredentialTenants(c *Credential) error {
	if len(c.Write) == 0 && len(c.Read) == 0 {
		return errors.Newf("credential %q may neither write nor read any tenant", c.Name)
	}
	for _, ts := range [][]string{c.Write, c.Read} {
		for _, t := range ts {
			if t == AnyTenant {
				continue
			}
			if err := ValidateTenantID(t); err != nil {
				return errors.Wrapf(err, "credential %q", c.Name)
			}
		}
	}
	return nil
}
