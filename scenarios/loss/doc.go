// Package loss holds the OOB-I loss test (loss_test.go): thousands of sealed
// requests from the VMS side (vmsctl/client, OOB-I) through a lossy UDP proxy
// to a real bmcsim process that is killed and restarted from its --state
// journal mid-run, read from Queue 1 by hvagent's OOB loop over the chardev
// system interface and served by the real agent on test:///default. It checks
// that every request id is answered as expected and that the hypervisor ran
// each one exactly once.
//
//	go test ./scenarios/loss -v                 # N = 2000 (400 with -short)
//	OOBLAB_LOSS_N=10000 go test ./scenarios/loss -timeout 40m -v   # make soak
//
// Knobs: OOBLAB_LOSS_N (messages), OOBLAB_LOSS_SEED (proxy RNG seed, printed
// on every run so a run can be repeated), OOBLAB_LOSS_DROP (drop probability
// per packet and direction, default 0.2), OOBLAB_BMCSIM (a prebuilt bmcsim
// instead of building ./bmcsim).
package loss
