package lan

import (
	"bytes"
	"testing"

	"github.com/ooblab/ooblab/bmcsim/metrics"
)

// The reply cache files answers only for requests the guard noted, under
// the session and address the server saw, and holds a bounded number of
// (session, address) pairs.
func TestReplyCacheBounds(t *testing.T) {
	rc := NewReplyCache("t1", metrics.New(nil))
	for i := 0; i < maxReplyKeys+10; i++ {
		rc.arrived(replyKey{bmcID: uint32(i), addr: "127.0.0.1:1"}, request{sessSeq: 1, rqSeq: 1, netFn: 6, cmd: 1, sum: checksum(nil)})
	}
	if n := len(rc.sessions); n != maxReplyKeys {
		t.Fatalf("%d pairs kept, want %d", n, maxReplyKeys)
	}
	k := replyKey{bmcID: 1, addr: "127.0.0.1:1"}
	// A request the guard never noted (another address) is not cached.
	if _, _, ok := rc.take(replyKey{bmcID: 1, addr: "127.0.0.1:2"}, 6, 1, checksum(nil)); ok {
		t.Error("a request from an address the guard did not note was matched")
	}
	req, hit, ok := rc.take(k, 6, 1, checksum(nil))
	if !ok || hit != nil {
		t.Fatalf("first request: ok %v, hit %v", ok, hit)
	}
	rc.file(k, req, []byte{0x20}, 0)
	// The same packet again hits; a new request with the same bytes and a
	// new rqSeq does not.
	rc.arrived(k, request{sessSeq: 1, rqSeq: 1, netFn: 6, cmd: 1, sum: checksum(nil)})
	if _, hit, _ := rc.take(k, 6, 1, checksum(nil)); hit == nil || !bytes.Equal(hit.data, []byte{0x20}) {
		t.Errorf("duplicate packet not answered from the cache: %+v", hit)
	}
	rc.arrived(k, request{sessSeq: 2, rqSeq: 2, netFn: 6, cmd: 1, sum: checksum(nil)})
	if _, hit, _ := rc.take(k, 6, 1, checksum(nil)); hit != nil {
		t.Errorf("a new request (new rqSeq) was answered from the cache")
	}
}
