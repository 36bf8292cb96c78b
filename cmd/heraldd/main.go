// Command heraldd is herald as a service: a config file (real providers,
// several apps each, the embedded store or PostgreSQL or Redis), the HTTP
// API, /healthz, /readyz, /metrics, an admin API and an operator console.
//
//	heraldd fakes -dir ./fakes               local fakes of every provider and a config for them
//	heraldd serve -config ./fakes/herald.yaml
//	heraldd check-config -config herald.yaml  names every bad field
//	heraldd migrate -config herald.yaml       PostgreSQL's migrations (serve runs them too)
//	heraldd keygen -name backend -scopes send,read
//	heraldd vapid generate
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/heraldhq/herald/email/emailtest"
	"github.com/heraldhq/herald/internal/exampletb"
	"github.com/heraldhq/herald/internal/fakeproviders"
	"github.com/heraldhq/herald/push/webpush"
	"github.com/heraldhq/herald/server"
)

const usage = `heraldd: herald as a service

  heraldd serve -config FILE [-listen ADDR]
  heraldd check-config -config FILE
  heraldd migrate -config FILE
  heraldd keygen [-name NAME] [-scopes send,events,read,admin]
  heraldd vapid generate
  heraldd fakes [-dir DIR] [-listen ADDR]
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stderr)
	case "check-config":
		err = checkConfig(args[1:], stdout)
	case "migrate":
		err = migrate(args[1:], stdout)
	case "keygen":
		err = keygen(args[1:], stdout)
	case "vapid":
		err = vapid(args[1:], stdout)
	case "fakes":
		err = fakes(args[1:], stdout)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "heraldd: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		var ce *server.ConfigError
		if errors.As(err, &ce) {
			fmt.Fprintln(stderr, "heraldd:", ce.Error())
			return 2
		}
		fmt.Fprintln(stderr, "heraldd:", err)
		return 1
	}
	return 0
}

func configFlag(name string, args []string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	path := fs.String("config", "herald.yaml", "the config file")
	return fs, path
}

func serve(args []string, stderr io.Writer) error {
	fs, path := configFlag("serve", args)
	listen := fs.String("listen", "", "override the config's listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := server.LoadConfig(*path)
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	log := server.NewLogger(&cfg.Log, os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := server.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		_ = s.Close(context.Background())
		return err
	}
	if err := s.Start(ctx); err != nil {
		_ = s.Close(context.Background())
		return err
	}
	log.Info("heraldd: listening", "addr", ln.Addr().String(), "store", cfg.Store.Kind)
	return s.Serve(ctx, ln)
}

func checkConfig(args []string, stdout io.Writer) error {
	fs, path := configFlag("check-config", args)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := server.LoadConfig(*path); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return nil
}

func migrate(args []string, stdout io.Writer) error {
	fs, path := configFlag("migrate", args)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := server.LoadConfig(*path)
	if err != nil {
		return err
	}
	if err := server.Migrate(context.Background(), cfg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s store: migrated\n", cfg.Store.Kind)
	return nil
}

func keygen(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	name := fs.String("name", "backend", "the key's name (logs show it, never the key)")
	scopes := fs.String("scopes", "send,read", "comma-separated: send, events, read, admin")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	key := "hk_" + hex.EncodeToString(b)
	sum := sha256.Sum256([]byte(key))
	fmt.Fprintf(stdout, "# the key, for the caller (shown once; heraldd keeps only its hash):\n%s\n\n# for api_keys in the config:\n  - name: %s\n    sha256: %s\n    scopes: [%s]\n",
		key, *name, hex.EncodeToString(sum[:]), strings.ReplaceAll(*scopes, ",", ", "))
	return nil
}

func vapid(args []string, stdout io.Writer) error {
	if len(args) != 1 || args[0] != "generate" {
		return errors.New("usage: heraldd vapid generate")
	}
	pub, priv, err := webpush.GenerateVAPIDKeys()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "# give browsers the public key; keep the private key in a file or the environment:\nvapid_public_key: %s\n# private key (put it in a file and write vapid_private_key: file:PATH):\n%s\n", pub, priv.String())
	return nil
}

// fakes runs local fakes of every provider until interrupted, with a
// config for them: heraldd serve -config DIR/herald.yaml.
func fakes(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("fakes", flag.ContinueOnError)
	dir := fs.String("dir", "fakes", "where to write the config and its secrets")
	listen := fs.String("listen", "127.0.0.1:8080", "the address heraldd will serve on")
	extra := fs.String("extra", "", "YAML appended to the config")
	gone := fs.String("gone", "gone@example.com", "an address the fake SMTP server refuses as unknown (550 5.1.1): mail to it is a dead letter")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	tb := &exampletb.TB{}
	defer tb.Done()
	f, err := fakeproviders.Start(tb, *dir, &fakeproviders.Options{Listen: *listen, Extra: *extra})
	if err != nil {
		return err
	}
	if *gone != "" {
		f.SMTP.FailRecipient(*gone, emailtest.Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Message: "no such user"})
	}
	fmt.Fprintf(stdout, "fakes: running (APNs rider %s and driver %s, FCM %s, Web Push %s, SMTP %s and shop %s, Twilio %s)\n",
		f.APNs.URL(), f.APNsDriver.URL(), f.FCM.URL(), f.WebPush.URL(), f.SMTP.Addr(), f.SMTPShop.Addr(), f.Twilio.URL())
	fmt.Fprintf(stdout, "fakes: config %s; admin key in %s/admin-key\nfakes: now run: heraldd serve -config %s\n", f.Config, *dir, f.Config)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}
