package block

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"

	"github.com/efficientgo/core/errors"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"
)

// fsUploadTempPrefix starts the name of the file an upload to a filesystem bucket writes before it is renamed into
// place. A process killed mid-upload leaves such a file behind, listed as an object of its directory (so that a
// block's deletion removes it with the block's other objects); no reader asks for it by name.
const fsUploadTempPrefix = ".strata-upload-"

// atomicFSBucket is a filesystem bucket whose uploads are atomic, as an object store's PUT is: objstore's own
// filesystem bucket writes the object in place, so a reader can meet a half-written meta.json or deletion mark,
// and a process killed mid-upload leaves a truncated object that every reader takes for a corrupted one. Here
// the object is written to a temporary file beside it, synced, and renamed over its name: a reader sees the whole
// object or none.
type atomicFSBucket struct {
	*filesystem.Bucket
	root string
}

// newAtomicFSBucket returns a filesystem bucket rooted at dir with atomic uploads.
func newAtomicFSBucket(dir string) (*atomicFSBucket, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, errors.Wrapf(err, "filesystem bucket directory %s", dir)
	}
	b, err := filesystem.NewBucket(root)
	if err != nil {
		return nil, errors.Wrapf(err, "filesystem bucket at %s", root)
	}
	return &atomicFSBucket{Bucket: b, root: root}, nil
}

// Upload writes r to name: to a temporary file in name's directory first, synced, then renamed over name. On any
// error the temporary file is removed and name is left as it was.
func (b *atomicFSBucket) Upload(ctx context.Context, name string, r io.Reader, _ ...objstore.ObjectUploadOption) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	file := filepath.Join(b.root, filepath.FromSlash(name))
	dir := filepath.Dir(file)
	if err := os.MkdirAll(dir, os.ModePerm); err != nil {
		return errors.Wrapf(err, "create directory of %s", name)
	}
	var suffix [8]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return errors.Wrap(err, "name temporary upload file")
	}
	tmp := filepath.Join(dir, fsUploadTempPrefix+filepath.Base(file)+"."+hex.EncodeToString(suffix[:]))
	// Mode as os.Create's, so that the umask applies as it did to objstore's own uploads.
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if err != nil {
		return errors.Wrapf(err, "create temporary file for %s", name)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err := io.Copy(f, r); err != nil {
		return errors.Wrapf(err, "write %s", name)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return errors.Wrapf(err, "sync %s", name)
	}
	if err := f.Close(); err != nil {
		return errors.Wrapf(err, "close %s", name)
	}
	if err := os.Rename(tmp, file); err != nil {
		return errors.Wrapf(err, "rename %s into place", name)
	}
	return nil
}
