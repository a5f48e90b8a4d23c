package lab_test

import . "github.com/onsi/ginkgo/v2"

// Labels, defined once; select with --label-filter.
var (
	// Lab specs need a running lab (QEMU guests, bmcsim, libvirt inside).
	Lab = Label("lab")
	// Failover specs cut the VMM-I link.
	Failover = Label("failover")
	// Power specs power the hypervisor host off and on through the BMC.
	Power = Label("power")
	// ExactlyOnce specs cut a channel or a process mid-request and check
	// the request ran once and its true outcome came back.
	ExactlyOnce = Label("exactly-once")
	// VMSSide specs check what an operator sees from the VMS: VM figures,
	// the output schema, the host's BMC from vmsctl (issue 12).
	VMSSide = Label("vms-side")
	// SOL specs use the host's serial console through its BMC
	// (Serial-over-LAN): ipmitool, FreeIPMI ipmiconsole, vmsctl host console.
	SOL = Label("sol")
	// Security specs walk the trust model end to end (an operator's app
	// code answers a challenge once).
	Security = Label("security")
	// Hostile specs attack the lab's BMC and VMM-I as a stranger on the
	// management LAN would (no password; spoofed sources) while the VMS
	// goes on (issue 20).
	Hostile = Label("hostile")
	// Truth specs pause or break a part mid-request and check that what
	// vmsctl says is what happened (issue 21).
	Truth = Label("truth")
	// Redfish specs use the lab BMC's Redfish service (issue 22).
	Redfish = Label("redfish")
	// UI specs drive the lab's web page in headless Chromium (issue 24).
	UI = Label("ui")
	// KCSGuest specs boot a minimal guest against an in-process bmcsim to
	// prove the KCS path (ipmi_si, /dev/ipmi0, pushed notifications); they
	// need no lab.
	KCSGuest = Label("kcs-guest")
	// Loss specs drive the OOB-I through a lossy UDP proxy to a real bmcsim
	// that is SIGKILLed mid-run (loss_test.go); they need no lab. `make
	// soak` runs them at 10,000 messages.
	Loss = Label("loss")
	// Sensors specs check the BMC's sensors follow the host (issue 23):
	// load raises CPU temperature and power; a pinned reading past a
	// threshold is a SEL entry.
	Sensors = Label("sensors")
)
