// Package depcheck holds tests of what herald's packages compile: a host
// that uses one channel must not compile another's SDK, and no fake
// (a *test package) may import a client. It has no code of its own.
package depcheck
