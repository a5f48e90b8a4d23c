package redfish_test

import (
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
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
