// Package depcheck holds tests of what herald's packages compile: a host
// that uses one channel must not compile another's SDK.
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
