package redfish_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/oem"
)

// BenchmarkSystems100Clients: 100 concurrent HTTPS clients (keep-alive,
// session token) read Systems/1 from one bmcsim; reports requests/s and
// the p99 latency.
func BenchmarkSystems100Clients(b *testing.B) {
	bmc, _ := start(b)
	hc := bmc.RedfishClient()
	const clients = 100
	per := b.N/clients + 1
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	b.ResetTimer()
	t0 := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				r, _ := http.NewRequest("GET", bmc.RedfishURL+"/redfish/v1/Systems/1", nil)
				r.SetBasicAuth("viewer", "viewer-pw-3")
				s := time.Now()
				resp, err := hc.Do(r)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
				lat[c] = append(lat[c], time.Since(s))
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	b.ReportMetric(float64(len(all))/el.Seconds(), "req/s")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkSSEAlertLatency: from an hvagent alert landing in the SEL (as
// it does over KCS) to an SSE subscriber reading its event; reports the
// median and p99 (goal: ≤ 100 ms).
func BenchmarkSSEAlertLatency(b *testing.B) {
	bmc, _ := start(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", bmc.RedfishURL+"/redfish/v1/EventService/SSE", nil)
	req.SetBasicAuth("viewer", "viewer-pw-3")
	resp, err := bmc.RedfishClient().Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	if _, err := rd.ReadString('\n'); err != nil {
		b.Fatal(err)
	}
	rec := oem.SELAlert{Class: oem.AlertLocal, RequestID: 1}.Record(oem.IANA(bmc.BMC.Config.IANA), 0)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		bmc.BMC.SEL.Add(rec)
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				b.Fatal(err)
			}
			if strings.HasPrefix(line, "data: ") {
				break
			}
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
