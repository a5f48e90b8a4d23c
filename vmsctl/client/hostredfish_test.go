package client_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// TestHostPowerAndSELOverRedfish: host power and host sel over Redfish
// (gofish) see what they see over IPMI: the same power state after a
// Redfish power off, and the same SEL entries, hvagent's alert decoded.
func TestHostPowerAndSELOverRedfish(t *testing.T) {
	ob := newOOBBench(t, bmcsimtest.Options{})
	ob.bs.BMC.SEL.Add(oem.SELAlert{Class: oem.AlertLocal, Command: 3, RequestID: 77}.Record(oem.DefaultIANA, 0))
	rf, err := client.New(ob.inv, client.Options{OOBOptions: client.OOBOptions{Transport: client.TransportRedfish}})
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	ipmi, err := client.New(ob.inv, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ipmi.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	st, err := rf.HostPower(ctx, "h1")
	if err != nil || !st.On {
		t.Fatalf("power over Redfish: %+v %v", st, err)
	}
	if err := rf.HostPowerControl(ctx, "h1", client.PowerOff); err != nil {
		t.Fatal(err)
	}
	if st, err := ipmi.HostPower(ctx, "h1"); err != nil || st.On {
		t.Fatalf("power over IPMI after a Redfish power off: %+v %v", st, err)
	}
	if st, err := rf.HostPower(ctx, "h1"); err != nil || st.On {
		t.Fatalf("power over Redfish after power off: %+v %v", st, err)
	}

	viaRF, err := rf.HostSEL(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	viaIPMI, err := ipmi.HostSEL(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if len(viaRF) != 1 || viaRF[0].Alert == nil || viaRF[0].Alert.RequestID != 77 || !reflect.DeepEqual(viaRF, viaIPMI) {
		t.Errorf("SEL over Redfish %+v, over IPMI %+v", viaRF, viaIPMI)
	}
}
