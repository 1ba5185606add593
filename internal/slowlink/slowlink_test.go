package slowlink

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// echoServer echoes every connection on 127.0.0.1.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// dialLink puts a link with delay and rate in front of an echo server
// and connects through it; both end with the test (a test may close
// them sooner).
func dialLink(t *testing.T, delay time.Duration, rate int64) (*Link, net.Conn) {
	t.Helper()
	l, err := Listen(echoServer(t), delay, rate)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return l, c
}

// TestDelayAndRate: a round trip takes at least twice the delay, and a
// transfer at least its size over the rate; the bytes arrive intact and
// in order. (Lower bounds only: the machine may be slower, never the
// link faster.)
func TestDelayAndRate(t *testing.T) {
	const delay = 20 * time.Millisecond
	const rate = 4 << 20 // bytes per second
	l, c := dialLink(t, delay, rate)
	c.SetDeadline(time.Now().Add(30 * time.Second))

	start := time.Now()
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
	if rtt := time.Since(start); rtt < 2*delay {
		t.Fatalf("round trip %v, under twice the delay %v", rtt, delay)
	}

	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 31)
	}
	start = time.Now()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.Write(data) }()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if !bytes.Equal(got, data) {
		t.Fatal("bytes changed on the way")
	}
	if d, min := time.Since(start), time.Duration(float64(len(data))/rate*float64(time.Second)); d < min {
		t.Fatalf("1 MiB each way took %v, under the %v the rate allows", d, min)
	}
	up, down := l.Carried()
	if up != int64(len(data))+4 || down != up {
		t.Fatalf("carried %d up, %d down", up, down)
	}
}

// TestClose ends connections in progress and does not hang.
func TestClose(t *testing.T) {
	l, c := dialLink(t, time.Millisecond, 0)
	c.Write([]byte("x"))
	io.ReadFull(c, make([]byte, 1))
	done := make(chan struct{})
	go func() { l.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after Close")
	}
}

// TestHalfClose: the end of one direction reaches the far end after the
// data, and the other direction still works.
func TestHalfClose(t *testing.T) {
	_, c := dialLink(t, 5*time.Millisecond, 0)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("last words"))
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "last words" {
		t.Fatalf("%q, %v", got, err)
	}
}

// TestTurns: each time the client starts sending after it has received
// (or at first) is a turn; requests written back to back are one.
func TestTurns(t *testing.T) {
	l, c := dialLink(t, time.Millisecond, 0)
	roundTrip := func(msgs ...string) {
		t.Helper()
		want := ""
		for _, m := range msgs {
			c.Write([]byte(m))
			want += m
		}
		got := make([]byte, len(want))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
			t.Fatalf("echo %q: %q %v", want, got, err)
		}
	}
	roundTrip("a")
	roundTrip("b")
	roundTrip("c", "d") // pipelined: one turn
	if n := l.Turns(); n != 3 {
		t.Fatalf("%d turns, want 3", n)
	}
}
