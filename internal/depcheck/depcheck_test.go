package depcheck

import (
	"os/exec"
	"strings"
	"testing"
)

// An APNs-and-SMTP-only program compiles no Firebase, gRPC or Google API
// client, and no other channel's SDK.
func TestAnAPNsAndSMTPHostCompilesNoOtherSDK(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "./apnssmtp").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps found only %d packages: the check would pass vacuously", len(deps))
	}
	for _, d := range deps {
		for _, banned := range []string{"firebase.google.com", "google.golang.org/grpc", "google.golang.org/api", "cloud.google.com/go", "github.com/twilio", "webpush-go", "heraldhq/herald/push/fcm", "heraldhq/herald/sms/twilio", "heraldhq/herald/push/webpush"} {
			if strings.Contains(d, banned) {
				t.Errorf("an APNs-and-SMTP-only host compiles %s", d)
			}
		}
	}
}

// clients are the packages that speak to a provider; the fakes must not
// import them, so a host that tests one channel compiles no other.
var clients = []string{
	"github.com/heraldhq/herald/push/apns", "github.com/heraldhq/herald/push/fcm", "github.com/heraldhq/herald/push/webpush",
	"github.com/heraldhq/herald/email/smtp", "github.com/heraldhq/herald/sms/twilio",
}

// No *test package (fakes, conformance suites, kits) imports a client.
func TestNoFakeImportsAClient(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "github.com/heraldhq/herald/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	fakes := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasSuffix(f[0], "test") {
			continue
		}
		fakes++
		for _, imp := range f[1:] {
			for _, c := range clients {
				if imp == c {
					t.Errorf("%s imports the client %s", f[0], c)
				}
			}
		}
	}
	if fakes < 8 {
		t.Fatalf("found %d *test packages: the check would pass vacuously", fakes)
	}
}

// The APNs client's own tests (with pushtest's fakes) compile no other
// provider's client.
func TestAPNsTestsCompileNoOtherClient(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-test", "github.com/heraldhq/herald/push/apns").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, d := range strings.Fields(string(out)) {
		for _, c := range clients[1:] {
			if d == c {
				t.Errorf("the APNs tests compile %s", c)
			}
		}
	}
}
