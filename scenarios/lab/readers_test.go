package lab_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

var _ = Describe("Queue 2 with several readers", Lab, ExactlyOnce, Ordered, func() {
	const host = "h1"

	It("answers every OOB-I command of two vmsctl processes while vmsctl alerts -f follows the alerts", func(ctx SpecContext) {
		// The follower: `vmsctl alerts -f` for the whole spec.
		fctx, stop := context.WithCancel(ctx)
		defer stop()
		var followed testutil.SyncBuffer
		follower := exec.CommandContext(fctx, filepath.Join(root, "bin", "vmsctl"), "--inventory", filepath.Join(labDir, "inventory.json"),
			"alerts", host, "-f", "--interval", "200ms")
		follower.Stdout, follower.Stderr = &followed, &followed
		Expect(follower.Start()).To(Succeed())
		exited := make(chan error, 1)
		go func() { exited <- follower.Wait() }()

		// Two vmsctl processes, each sending OOB-I commands one after the
		// other, both at once.
		const perProcess = 4
		var wg sync.WaitGroup
		type run struct {
			out  string
			code int
		}
		runs := make(chan run, 2*perProcess)
		for range 2 {
			wg.Go(func() {
				for i := range perProcess {
					cmd := []string{"vm", "status", host, "web1", "--via", "oob"}
					if i%2 == 1 {
						cmd = []string{"vm", "list", host, "--via", "oob"}
					}
					out, code := Vmsctl(ctx, cmd...)
					runs <- run{out, code}
				}
			})
		}
		// Meanwhile a refused command raises an alert on Queue 2.
		c, err := client.New(inv, client.Options{Via: client.ViaOOB, Principal: "intern"})
		Expect(err).NotTo(HaveOccurred())
		defer c.Close()
		_, err = c.Do(ctx, host, vmsg.CmdDestroy, "web1")
		Expect(errors.Is(err, client.ErrUnauthorized)).To(BeTrue(), "%v", err)
		wg.Wait()
		close(runs)
		n := 0
		for r := range runs {
			Expect(r.code).To(Equal(0), r.out)
			Expect(r.out).To(ContainSubstring("via oob-i"))
			n++
		}
		Expect(n).To(Equal(2 * perProcess))

		// The follower saw the alert, and no vmsctl took it from it.
		Eventually(followed.String).WithTimeout(30 * time.Second).Should(ContainSubstring("intern"))
		Consistently(exited).WithTimeout(time.Second).ShouldNot(Receive(), followed.String())
		stop()
		<-exited
	}, SpecTimeout(5*time.Minute))
})
