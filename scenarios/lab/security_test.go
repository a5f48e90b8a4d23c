package lab_test

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/ooblab/ooblab/vmsctl/client"
)

// A protected start answered from the operator's phone: the 6-digit RFC 6238
// code an authenticator app shows for the enrolled otpauth:// URI (made
// here with pquerna/otp, as the app would), usable once.
var _ = Describe("Security", Lab, Security, Serial, Ordered, func() {
	const host = "h1"
	opKey := func() string { return filepath.Join(labDir, "operator.key") }

	AfterAll(func(ctx SpecContext) {
		out, code := Vmsctl(ctx, "vm", "destroy", host, "db1", "--via", "vmmi", "--otp-secret-file", opKey())
		Expect(code).To(Equal(0), out)
	})

	It("starts a protected VM with an authenticator-app code, and refuses the same code a second time", func(ctx SpecContext) {
		uri, err := os.ReadFile(opKey())
		Expect(err).NotTo(HaveOccurred())
		k, err := otp.NewKeyFromURL(strings.TrimSpace(string(uri)))
		Expect(err).NotTo(HaveOccurred(), "the operator's key is a standard otpauth:// URI an app can scan")

		out, code := Vmsctl(ctx, "vm", "destroy", host, "db1", "--via", "vmmi", "--otp-secret-file", opKey())
		Expect(code).To(Equal(0), out)
		alertsBefore, code := Vmsctl(ctx, "alerts", host, "-o", "json")
		Expect(code).To(Equal(0), alertsBefore)

		// Wait for a fresh time step so the code is not one the automation
		// mode above may have spent, then answer with what the phone shows.
		step := time.Now().Unix() / 30
		Eventually(func() int64 { return time.Now().Unix() / 30 }).WithTimeout(35 * time.Second).WithPolling(200 * time.Millisecond).
			Should(BeNumerically(">", step))
		appCode, err := totp.GenerateCode(k.Secret(), time.Now())
		Expect(err).NotTo(HaveOccurred())
		// Never in argv (the process list): from a 0600 file.
		codeFile := filepath.Join(GinkgoT().TempDir(), "code")
		Expect(os.WriteFile(codeFile, []byte(appCode+"\n"), 0o600)).To(Succeed())
		out, code = Vmsctl(ctx, "vm", "start", host, "db1", "--via", "vmmi", "--otp-file", codeFile)
		Expect(code).To(Equal(0), "app code %s: %s", appCode, out)
		Eventually(VM(ctx, client.ViaOOB, host, "db1")).WithTimeout(time.Minute).Should(BeInState("running"))

		// The same code again (its time step is spent): refused, and the
		// refusal reaches the operator as an alert.
		out, code = Vmsctl(ctx, "vm", "shutdown", host, "db1", "--via", "oob", "--otp-file", codeFile)
		Expect(code).NotTo(Equal(0), out)
		Expect(out).To(ContainSubstring("already used"))
		Expect(VM(ctx, client.ViaVMMI, host, "db1")()).To(BeInState("running"))
		Eventually(AlertsJSON(ctx, host)).WithTimeout(30 * time.Second).Should(ContainSubstring("already used"))
	}, SpecTimeout(4*time.Minute))
})
