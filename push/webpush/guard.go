package webpush

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"

	"github.com/heraldhq/herald/push"
)

// knownPushServices are the hosts (and their subdomains) a subscription
// endpoint may name without Config.AllowedHosts. Unexported so that no
// code in the process can widen the allow-list behind the operator's back.
var knownPushServices = []string{
	"fcm.googleapis.com",
	"android.googleapis.com",
	"push.services.mozilla.com",
	"push.apple.com",
	"notify.windows.com",
}

// KnownPushServices returns a copy of the hosts (and their subdomains) a
// subscription endpoint may name without Config.AllowedHosts: FCM
// (Chrome, Edge on Android), Mozilla autopush (Firefox), Apple (Safari)
// and Windows (WNS). Operators add hosts through Config.AllowedHosts.
func KnownPushServices() []string { return append([]string(nil), knownPushServices...) }

// blockedPrefixes are never dialled: loopback, private, link-local (cloud
// metadata), carrier-grade NAT, benchmarking, documentation, multicast and
// reserved ranges, IPv4 and IPv6.
var blockedPrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
		"192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
		"203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
		"::/128", "::1/128", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/32", "2001:db8::/32",
		"2002::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// allowedIP reports whether ip may be dialled; loopback only when allowed.
// A zoned address (fe80::1%eth0) names an interface, never a push
// service, and IPv4-compatible IPv6 (::a.b.c.d, deprecated by RFC 4291)
// would smuggle an IPv4 address past the IPv4 ranges: both are refused.
func allowedIP(ip netip.Addr, allowLoopback bool) bool {
	if ip.Zone() != "" {
		return false
	}
	if ip.Is6() && !ip.Is4In6() {
		b := ip.As16()
		compat := true
		for _, x := range b[:12] {
			if x != 0 {
				compat = false
				break
			}
		}
		if compat && !ip.IsLoopback() && !ip.IsUnspecified() {
			return false // ::/96 minus :: and ::1
		}
	}
	ip = ip.Unmap()
	if allowLoopback && ip.IsLoopback() {
		return true
	}
	for _, p := range blockedPrefixes {
		if p.Contains(ip) {
			return false
		}
	}
	return ip.IsValid() && !ip.IsUnspecified()
}

// guard enforces the endpoint rules at parse time and the address rules
// at connect time.
type guard struct {
	allowed       []string // host or host:port entries from Config.AllowedHosts, lower-cased
	allowLoopback bool
	lookup        func(ctx context.Context, host string) ([]netip.Addr, error)
}

func forbidden(endpoint, why string) error {
	return &push.Error{Provider: push.WebPush, Kind: push.ErrForbiddenEndpoint, Reason: why, Token: maskEndpoint(endpoint)}
}

// checkEndpoint validates a subscription endpoint: https, no userinfo, an
// ASCII host that is a known push service (port 443) or listed in
// AllowedHosts, at most 2 KiB.
func (g *guard) checkEndpoint(endpoint string) error {
	if len(endpoint) > 2048 {
		return forbidden(endpoint, "endpoint over 2 KiB")
	}
	u, err := url.Parse(endpoint)
	if err != nil || !u.IsAbs() {
		return forbidden(endpoint, "endpoint is not an absolute URL")
	}
	if u.Scheme != "https" {
		return forbidden(endpoint, "endpoint is not https")
	}
	if u.User != nil {
		return forbidden(endpoint, "endpoint has user info")
	}
	host := strings.ToLower(u.Hostname())
	for _, r := range host {
		if r > 0x7e {
			return forbidden(endpoint, "endpoint host is not ASCII (use its punycode form)")
		}
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	for _, a := range g.allowed {
		if a == host && port == "443" || a == net.JoinHostPort(host, port) {
			return nil
		}
	}
	if strings.Contains(u.Host, "%") || strings.Contains(host, "%") {
		return forbidden(endpoint, "endpoint host has a zone (an interface name)")
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return forbidden(endpoint, "endpoint host is an IP address")
	}
	if port != "443" {
		return forbidden(endpoint, "endpoint port is not 443")
	}
	host = strings.TrimSuffix(host, ".")
	for _, k := range knownPushServices {
		if host == k || strings.HasSuffix(host, "."+k) {
			return nil
		}
	}
	return forbidden(endpoint, "endpoint host is not a known push service (add it to Config.AllowedHosts)")
}

// dial resolves host itself, refuses if any address is not public, and
// connects to an address it checked (the dialer's Control checks the
// socket's address again), so DNS rebinding cannot slip a private address
// in between.
func (g *guard) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		addrs, err = g.lookup(ctx, host)
		if err != nil {
			return nil, err
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("webpush: %s resolves to no address", host)
	}
	for _, ip := range addrs {
		if !allowedIP(ip, g.allowLoopback) {
			return nil, fmt.Errorf("%w: %s resolves to %s, a non-public address", push.ErrForbiddenEndpoint, host, ip)
		}
	}
	d := &net.Dialer{Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !allowedIP(ap.Addr(), g.allowLoopback) {
			return fmt.Errorf("%w: refusing to connect to %s", push.ErrForbiddenEndpoint, address)
		}
		return nil
	}}
	var lastErr error
	for _, ip := range addrs {
		c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func defaultLookup(ctx context.Context, host string) ([]netip.Addr, error) {
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	return ips, err
}

// maskEndpoint keeps an endpoint's origin and hides its path (the
// subscription's identity).
func maskEndpoint(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return push.MaskToken(endpoint)
	}
	return u.Scheme + "://" + u.Host + "/" + push.MaskToken(strings.TrimPrefix(u.Path, "/"))
}
