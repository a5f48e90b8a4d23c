package redfish

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// subscription is one EventDestination: events POSTed to Destination,
// each retried DeliveryRetryAttempts times DeliveryRetryIntervalSeconds
// apart, then dropped. Its queue holds subQueue events; past that new ones
// are dropped (and counted), so a dead destination costs bounded memory.
type subscription struct {
	id       string
	dest     string
	context  string
	prefixes []string
	owner    string
	queue    chan []byte
	stop     context.CancelFunc

	mu        sync.Mutex
	delivered int
	dropped   int
}

const (
	subQueue         = 64
	maxSubscriptions = 16
)

type subscriptions struct {
	mu       sync.Mutex
	byID     map[string]*subscription
	next     uint64
	retries  int
	interval time.Duration
	client   *http.Client
	wg       sync.WaitGroup
}

func newSubscriptions() *subscriptions {
	return &subscriptions{byID: map[string]*subscription{}, retries: 3, interval: 5 * time.Second,
		client: &http.Client{Timeout: 5 * time.Second}}
}

// deliver is the broker's sink: it queues ev for every subscription whose
// RegistryPrefixes take it. It runs under the broker's lock: it never blocks.
func (ss *subscriptions) deliver(_ string, rec eventRecord, ev map[string]any) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	prefix, _, _ := bytes.Cut([]byte(rec.messageID), []byte("."))
	for _, sub := range ss.byID {
		if len(sub.prefixes) > 0 && !slices.Contains(sub.prefixes, string(prefix)) {
			continue
		}
		cp := make(map[string]any, len(ev))
		for k, v := range ev {
			cp[k] = v
		}
		cp["Context"] = sub.context
		body, _ := json.Marshal(cp)
		select {
		case sub.queue <- body:
		default:
			sub.mu.Lock()
			sub.dropped++
			sub.mu.Unlock()
		}
	}
}

func (ss *subscriptions) settings() (int, time.Duration) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.retries, ss.interval
}

// run delivers sub's events until ctx ends.
func (ss *subscriptions) run(ctx context.Context, sub *subscription, log func(msg string, args ...any)) {
	defer ss.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case body := <-sub.queue:
			retries, interval := ss.settings()
			ok := false
			for attempt := 0; attempt <= retries && !ok; attempt++ {
				if attempt > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(interval):
					}
				}
				ok = ss.post(ctx, sub.dest, body)
			}
			sub.mu.Lock()
			if ok {
				sub.delivered++
			} else {
				sub.dropped++
			}
			sub.mu.Unlock()
			if !ok {
				log("redfish event not delivered", "subscription", sub.id, "destination", sub.dest, "attempts", retries+1)
			}
		}
	}
}

func (ss *subscriptions) post(ctx context.Context, dest string, body []byte) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, dest, bytes.NewReader(body))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := ss.client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 300
}

// close stops every delivery and waits for them.
func (ss *subscriptions) close() {
	ss.mu.Lock()
	for id, sub := range ss.byID {
		sub.stop()
		delete(ss.byID, id)
	}
	ss.mu.Unlock()
	ss.wg.Wait()
}

func subscriptionBody(sub *subscription) map[string]any {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	prefixes := sub.prefixes
	if prefixes == nil {
		prefixes = []string{}
	}
	return map[string]any{
		"@odata.id":        subsURI + "/" + sub.id,
		"@odata.type":      "#EventDestination.v1_14_0.EventDestination",
		"Id":               sub.id,
		"Name":             "Event Subscription " + sub.id,
		"Destination":      sub.dest,
		"Context":          sub.context,
		"Protocol":         "Redfish",
		"SubscriptionType": "RedfishEvent",
		"EventFormatType":  "Event",
		"RegistryPrefixes": prefixes,
		"Status":           map[string]any{"State": "Enabled", "Health": "OK"},
		"Oem": map[string]any{"Ooblab": map[string]any{
			"@odata.type": "#OoblabEventDestination.v1_0_0.OoblabEventDestination",
			"Delivered":   sub.delivered, "Dropped": sub.dropped,
		}},
	}
}

// subscriptionRequest is the body of POST Subscriptions.
type subscriptionRequest struct {
	Destination      *string
	Protocol         *string
	Context          *string
	RegistryPrefixes []string
	EventFormatType  *string
	SubscriptionType *string
}

func (s *Service) getSubscriptions(w http.ResponseWriter, r *http.Request, _ *caller) {
	s.subs.mu.Lock()
	ids := make([]string, 0, len(s.subs.byID))
	for id := range s.subs.byID {
		ids = append(ids, subsURI+"/"+id)
	}
	s.subs.mu.Unlock()
	slices.Sort(ids)
	writeResource(w, r, http.StatusOK, collection(subsURI, "EventDestinationCollection", "Event Subscriptions", ids))
}

func badValue(prop, val, why string) *apiError {
	return &apiError{status: http.StatusBadRequest, key: "PropertyValueNotInList", prop: prop, args: []string{val, prop},
		message: "The value '" + trunc(val) + "' for the property " + prop + " is not in the list of acceptable values: " + why + "."}
}

func (s *Service) postSubscription(w http.ResponseWriter, r *http.Request, c *caller) {
	body, aerr := readBody(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var req subscriptionRequest
	if aerr := decodeJSON(body, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	if req.Destination == nil {
		writeError(w, &apiError{status: http.StatusBadRequest, key: "PropertyMissing", prop: "Destination", args: []string{"Destination"},
			message: "The property Destination is a required property and must be included in the request."})
		return
	}
	u, err := url.Parse(*req.Destination)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		writeError(w, badValue("Destination", *req.Destination, "an http or https URL without credentials"))
		return
	}
	for _, p := range []struct {
		name string
		v    *string
		want string
	}{{"Protocol", req.Protocol, "Redfish"}, {"EventFormatType", req.EventFormatType, "Event"}, {"SubscriptionType", req.SubscriptionType, "RedfishEvent"}} {
		if p.v != nil && *p.v != p.want {
			writeError(w, badValue(p.name, *p.v, p.want+" only"))
			return
		}
	}
	for _, p := range req.RegistryPrefixes {
		if p != "ResourceEvent" && p != "Base" && p != "Ooblab" {
			writeError(w, badValue("RegistryPrefixes", p, "ResourceEvent or Ooblab"))
			return
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	sub := &subscription{dest: u.String(), prefixes: req.RegistryPrefixes, owner: c.user, queue: make(chan []byte, subQueue), stop: stop}
	if req.Context != nil {
		sub.context = *req.Context
	}
	s.subs.mu.Lock()
	if len(s.subs.byID) >= maxSubscriptions {
		s.subs.mu.Unlock()
		stop()
		writeError(w, newError(http.StatusServiceUnavailable, "ServiceTemporarilyUnavailable",
			"The service is temporarily unavailable: "+itoa(maxSubscriptions)+" subscriptions exist."))
		return
	}
	s.subs.next++
	sub.id = strconv.FormatUint(s.subs.next, 10)
	s.subs.byID[sub.id] = sub
	s.subs.wg.Add(1)
	s.subs.mu.Unlock()
	go s.subs.run(ctx, sub, s.log.Warn)
	s.watchPower(r.Context())
	s.log.Info("redfish event subscription", "id", sub.id, "destination", sub.dest, "user", c.user)
	w.Header().Set("Location", subsURI+"/"+sub.id)
	writeResource(w, r, http.StatusCreated, subscriptionBody(sub))
}

func (s *Service) subscription(id string) *subscription {
	s.subs.mu.Lock()
	defer s.subs.mu.Unlock()
	return s.subs.byID[id]
}

func (s *Service) getSubscription(w http.ResponseWriter, r *http.Request, _ *caller) {
	sub := s.subscription(r.PathValue("id"))
	if sub == nil {
		writeError(w, errNotFound(r.URL.Path))
		return
	}
	writeResource(w, r, http.StatusOK, subscriptionBody(sub))
}

func (s *Service) deleteSubscription(w http.ResponseWriter, r *http.Request, c *caller) {
	s.subs.mu.Lock()
	sub := s.subs.byID[r.PathValue("id")]
	if sub != nil {
		delete(s.subs.byID, sub.id)
	}
	s.subs.mu.Unlock()
	if sub == nil {
		writeError(w, errNotFound(r.URL.Path))
		return
	}
	sub.stop()
	s.log.Info("redfish event subscription deleted", "id", sub.id, "user", c.user)
	w.WriteHeader(http.StatusNoContent)
}

// eventServicePatch is the body of PATCH EventService.
type eventServicePatch struct {
	DeliveryRetryAttempts        *int
	DeliveryRetryIntervalSeconds *int
}

func (s *Service) patchEventService(w http.ResponseWriter, r *http.Request, c *caller) {
	body, aerr := readBody(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if aerr := ifMatch(r, etag(s.eventService())); aerr != nil {
		writeError(w, aerr)
		return
	}
	var p eventServicePatch
	if aerr := decodeJSON(body, &p); aerr != nil {
		writeError(w, aerr)
		return
	}
	if v := p.DeliveryRetryAttempts; v != nil && (*v < 0 || *v > 10) {
		writeError(w, badValue("DeliveryRetryAttempts", strconv.Itoa(*v), "0 to 10"))
		return
	}
	if v := p.DeliveryRetryIntervalSeconds; v != nil && (*v < 1 || *v > 600) {
		writeError(w, badValue("DeliveryRetryIntervalSeconds", strconv.Itoa(*v), "1 to 600"))
		return
	}
	s.subs.mu.Lock()
	if p.DeliveryRetryAttempts != nil {
		s.subs.retries = *p.DeliveryRetryAttempts
	}
	if p.DeliveryRetryIntervalSeconds != nil {
		s.subs.interval = time.Duration(*p.DeliveryRetryIntervalSeconds) * time.Second
	}
	s.subs.mu.Unlock()
	s.log.Info("redfish event service changed", "user", c.user)
	writeResource(w, r, http.StatusOK, s.eventService())
}
