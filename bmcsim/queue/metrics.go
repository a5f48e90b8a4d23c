package queue

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	label                                 string
	writes, duplicates, full, reads, acks prometheus.Counter
	refused                               prometheus.Counter
	evicted                               *prometheus.CounterVec
}

func newMetrics(queue string) *metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ooblab", Subsystem: "bmc_queue", Name: name, Help: help,
			ConstLabels: prometheus.Labels{"queue": queue},
		})
	}
	return &metrics{
		label:      queue,
		writes:     c("writes_total", "Records queued."),
		duplicates: c("duplicates_total", "Writes of a record already queued or just acknowledged, answered without queueing."),
		full:       c("full_rejections_total", "Writes refused with 0xC4 because the queue was full."),
		reads:      c("reads_total", "Read commands served."),
		acks:       c("acks_total", "Records removed by an acknowledging read."),
		refused:    c("not_owner_total", "Reads and Queue 1 writes refused with 0xD4: the reader id is bound to another BMC user."),
		evicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ooblab", Subsystem: "bmc_queue", Name: "evictions_total",
			Help:        "Queue 2 records or readers dropped without an acknowledgement: reader_gone (its reader stopped reading), alert_expired (an alert no follower read in time), alert_dropped (an alert message dropped from a full alert log), follower_gone (a follower idle for the follower TTL forgotten), readers_full (reader forgotten).",
			ConstLabels: prometheus.Labels{"queue": queue},
		}, []string{"reason"}),
	}
}

func (m *metrics) collectors(q *Queue) []prometheus.Collector {
	g := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "ooblab", Subsystem: "bmc_queue", Name: name, Help: help,
			ConstLabels: prometheus.Labels{"queue": m.label},
		}, f)
	}
	return []prometheus.Collector{
		m.writes, m.duplicates, m.full, m.reads, m.acks, m.refused, m.evicted,
		g("depth", "Records queued.", func() float64 { return float64(q.Status().Depth) }),
		g("capacity", "Queue capacity in records.", func() float64 { return float64(q.capacity) }),
		g("oldest_age_seconds", "Age of the oldest queued record.", func() float64 { return q.Status().OldestAge.Seconds() }),
	}
}
