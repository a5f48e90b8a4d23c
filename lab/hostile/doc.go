// Package hostile holds tests that put hvagent (its own hvagent/run.Run,
// VMM-I only, against libvirt's test:///default) and vmsctl's Go package
// together in one process, the way `vmsctl --via vmmi` talks to a host,
// under the attacks and faults of issue 20 that need both ends: silent TCP
// peers holding VMM-I slots, and a VMS clock stepped back.
package hostile
