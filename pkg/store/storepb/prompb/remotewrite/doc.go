// Package remotewrite decodes Prometheus remote write bodies (1.0's prometheus.WriteRequest, hand-written;
// 2.0's io.prometheus.write.v2.Request) into prompb series, bounding the memory decoding takes before
// allocating it (cost.go). It knows nothing of tenants or limits: the caller passes them as Options. Body
// negotiation (Content-Type, Content-Encoding, decompression, size) is the distributor's (pkg/receive).
package remotewrite
