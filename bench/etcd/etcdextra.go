// etcdextra: the etcd side of the bench/compare.sh figures that the shared
// etcd anchor (../shared/tools/etcd-anchor) does not measure, with etcd's own
// Go client (clientv3, Debian's golang-etcd-server-dev), built by compare.sh
// the way the anchor builds its etcdbench.
//
//	etcdextra -op mixed -endpoints A,B,C -clients C -total N -val B -keys K -read-ratio R
//	    writes K keys, then N requests from C goroutines over them: a fraction R
//	    linearizable gets (etcd's default), the rest puts. Prints kvbench's line:
//	    op=mixed clients= depth=1 requests= size= secs= ops_per_s= p50_us= p99_us= p999_us= errors=
//	etcdextra -op txn -endpoints A,B,C -clients C -total N -val B -keys K
//	    kvbench txn's twin: writes K keys, then N transactions from C
//	    goroutines, each a compare-and-swap on a random key: if its value is
//	    the one this client last read (version 0 when it was absent) then put
//	    a new value (the first 8 bytes a tag unique to the write) else get it;
//	    either answer counts, compares_failed= counts the second.
//	etcdextra -op watch -endpoints A,B,C -clients W -total N -val B
//	    kvbench watch's twin: one Watch WithPrefix (from a marker's revision,
//	    ready once the marker arrives), then W goroutines put N values under
//	    the prefix, the first 8 bytes the send time (CLOCK_REALTIME ns).
//	    ops_per_s: events received / seconds from the first put to the last
//	    event; p50_us...: send to event received; errors: puts never seen.
//	etcdextra -op writer -endpoints A,B,C -seconds S -val B
//	    kvbench writer's twin: one client putting in a loop, each put retried
//	    until acknowledged; a line "SEND_NS ACK_NS" per acknowledgement
//	    (CLOCK_REALTIME ns of the first attempt and of the acknowledgement),
//	    "SEND_NS FAIL_NS error" per failed attempt.
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
)

func main() {
	eps := flag.String("endpoints", "127.0.0.1:2379", "")
	op := flag.String("op", "mixed", "mixed|txn|watch|writer")
	clients := flag.Int("clients", 64, "concurrent requesters")
	total := flag.Int("total", 20000, "requests")
	vsize := flag.Int("val", 256, "value size")
	keys := flag.Int("keys", 1000, "keys (mixed, txn)")
	ratio := flag.Float64("read-ratio", 0.9, "fraction of gets (mixed)")
	seconds := flag.Int("seconds", 60, "writer: how long")
	timeout := flag.Duration("timeout", 5*time.Second, "per attempt")
	flag.Parse()
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*eps, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdextra:", err)
		os.Exit(1)
	}
	defer cli.Close()
	val := strings.Repeat("v", *vsize)
	switch *op {
	case "mixed":
		os.Exit(mixed(cli, *clients, *total, *keys, *ratio, val, *timeout))
	case "txn":
		os.Exit(txn(cli, *clients, *total, *keys, val, *timeout))
	case "watch":
		os.Exit(watch(cli, *clients, *total, val, *timeout))
	case "writer":
		writer(cli, time.Duration(*seconds)*time.Second, val, *timeout)
	default:
		fmt.Fprintln(os.Stderr, "etcdextra: -op: mixed, txn, watch or writer")
		os.Exit(2)
	}
}

func put(cli *clientv3.Client, k, v string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := cli.Put(ctx, k, v)
	return err
}

// preload writes the K keys mixed and txn use, 32 at a time.
func preload(cli *clientv3.Client, keys int, val string, timeout time.Duration) error {
	errs := make(chan error, keys)
	sem := make(chan struct{}, 32)
	for k := 0; k < keys; k++ {
		sem <- struct{}{}
		go func(k int) {
			errs <- put(cli, fmt.Sprintf("etcdextra/%08d", k), val, timeout)
			<-sem
		}(k)
	}
	for k := 0; k < keys; k++ {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

// report prints kvbench's line for the latencies of all clients.
func report(op string, clients, requests, size int, el time.Duration, lat [][]time.Duration, errors int64, extra string) {
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	n := len(all)
	at := func(q float64) int64 {
		if n == 0 {
			return 0
		}
		r := int(q*float64(n)+0.999999) - 1
		if r < 0 {
			r = 0
		}
		return all[r].Microseconds()
	}
	fmt.Printf("op=%s clients=%d depth=1 requests=%d size=%d secs=%.3f ops_per_s=%.0f p50_us=%d p99_us=%d p999_us=%d errors=%d%s\n",
		op, clients, requests, size, el.Seconds(), float64(n)/el.Seconds(), at(0.5), at(0.99), at(0.999), errors, extra)
}

// fanOut splits total requests over clients goroutines and waits for them
// all: client c makes n requests, numbered from first.
func fanOut(clients, total int, client func(c, first, n int)) {
	var wg sync.WaitGroup
	for c, first := 0, 0; c < clients; c++ {
		n := total/clients + btoi(c < total%clients)
		wg.Add(1)
		go func(c, first, n int) {
			defer wg.Done()
			client(c, first, n)
		}(c, first, n)
		first += n
	}
	wg.Wait()
}

func mixed(cli *clientv3.Client, clients, total, keys int, ratio float64, val string, timeout time.Duration) int {
	if err := preload(cli, keys, val, timeout); err != nil {
		fmt.Fprintln(os.Stderr, "etcdextra: writing the keys:", err)
		return 1
	}
	lat := make([][]time.Duration, clients)
	var errors int64
	start := time.Now()
	fanOut(clients, total, func(c, _, n int) {
		rng := rand.New(rand.NewSource(int64(c + 2)))
		for i := 0; i < n; i++ {
			k := fmt.Sprintf("etcdextra/%08d", rng.Intn(keys))
			t := time.Now()
			var err error
			if rng.Float64() < ratio {
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				_, err = cli.Get(ctx, k)
				cancel()
			} else {
				err = put(cli, k, val, timeout)
			}
			if err != nil {
				atomic.AddInt64(&errors, 1)
			}
			lat[c] = append(lat[c], time.Since(t))
		}
	})
	report("mixed", clients, total, len(val), time.Since(start), lat, errors, fmt.Sprintf(" read_ratio=%.3f keys=%d", ratio, keys))
	if errors > 0 {
		return 1
	}
	return 0
}

// tagged is val with its first 8 bytes replaced by x (little-endian).
func tagged(val string, x uint64) string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], x)
	return string(b[:]) + val[8:]
}

func txn(cli *clientv3.Client, clients, total, keys int, val string, timeout time.Duration) int {
	if err := preload(cli, keys, val, timeout); err != nil {
		fmt.Fprintln(os.Stderr, "etcdextra: writing the keys:", err)
		return 1
	}
	lat := make([][]time.Duration, clients)
	var errors, failed int64
	start := time.Now()
	fanOut(clients, total, func(c, _, n int) {
		rng := rand.New(rand.NewSource(int64(c + 2)))
		last := make([]string, keys) // the value this client last read of each key
		absent := make([]bool, keys)
		for k := range last {
			last[k] = val
		}
		for i := 0; i < n; i++ {
			k := rng.Intn(keys)
			key := fmt.Sprintf("etcdextra/%08d", k)
			nv := tagged(val, uint64(c+1)<<40|uint64(i+1))
			t := time.Now()
			cmp := clientv3.Compare(clientv3.Value(key), "=", last[k])
			if absent[k] {
				cmp = clientv3.Compare(clientv3.Version(key), "=", 0)
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			resp, err := cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, nv)).Else(clientv3.OpGet(key)).Commit()
			cancel()
			lat[c] = append(lat[c], time.Since(t))
			switch {
			case err != nil:
				atomic.AddInt64(&errors, 1)
			case resp.Succeeded:
				last[k], absent[k] = nv, false
			default:
				atomic.AddInt64(&failed, 1)
				kvs := resp.Responses[0].GetResponseRange().Kvs
				absent[k] = len(kvs) == 0
				if !absent[k] {
					last[k] = string(kvs[0].Value)
				}
			}
		}
	})
	report("txn", clients, total, len(val), time.Since(start), lat, errors, fmt.Sprintf(" compares_failed=%d keys=%d", failed, keys))
	if errors > 0 {
		return 1
	}
	return 0
}

// watcher receives the writers' events on ch; ready is closed at the
// marker. It returns once every put was seen, or at the first idle second
// after writersDone is closed, or when the watch fails.
type watcher struct {
	got                  []bool
	lat                  []time.Duration
	received, duplicates int
	last                 time.Time
}

func (w *watcher) run(ch clientv3.WatchChan, prefix string, ready chan struct{}, writersDone chan struct{}) {
	isReady := false
	for w.received < len(w.got) {
		select {
		case wr, ok := <-ch:
			if !ok {
				fmt.Fprintln(os.Stderr, "etcdextra watch: the watch channel closed")
				return
			}
			if err := wr.Err(); err != nil {
				fmt.Fprintln(os.Stderr, "etcdextra watch:", err)
				return
			}
			now := time.Now()
			for _, ev := range wr.Events {
				i, err := strconv.Atoi(strings.TrimPrefix(string(ev.Kv.Key), prefix))
				if err != nil { // the marker
					if !isReady {
						isReady = true
						close(ready)
					}
					continue
				}
				if ev.Type != clientv3.EventTypePut || len(ev.Kv.Value) < 8 || i < 0 || i >= len(w.got) {
					continue
				}
				w.last = now
				if w.got[i] {
					w.duplicates++
					continue
				}
				sent := int64(binary.LittleEndian.Uint64(ev.Kv.Value[:8]))
				w.lat = append(w.lat, time.Duration(now.UnixNano()-sent))
				w.got[i] = true
				w.received++
			}
		case <-time.After(time.Second):
			select {
			case <-writersDone:
				return
			default:
			}
		}
	}
}

func watch(cli *clientv3.Client, clients, total int, val string, timeout time.Duration) int {
	const prefix = "etcdextra/watch/"
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	resp, err := cli.Put(ctx, prefix+"start", "start")
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdextra watch: the marker:", err)
		return 1
	}
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	ch := cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision))
	w := &watcher{got: make([]bool, total)}
	ready, writersDone, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		w.run(ch, prefix, ready, writersDone)
		close(done)
	}()
	select {
	case <-ready:
	case <-done:
		return 1
	case <-time.After(10 * time.Second):
		fmt.Fprintln(os.Stderr, "etcdextra watch: no marker event within 10 s")
		return 1
	}
	var putErrors int64
	start := time.Now()
	fanOut(clients, total, func(_, first, n int) {
		for i := first; i < first+n; i++ {
			v := tagged(val, uint64(time.Now().UnixNano()))
			if put(cli, fmt.Sprintf("%s%010d", prefix, i), v, timeout) != nil {
				atomic.AddInt64(&putErrors, 1)
			}
		}
	})
	close(writersDone)
	<-done
	end := w.last
	if w.received == 0 {
		end = time.Now()
	}
	missing := int64(total - w.received)
	report("watch", clients, total, len(val), end.Sub(start), [][]time.Duration{w.lat}, missing,
		fmt.Sprintf(" events=%d duplicates=%d put_errors=%d", w.received, w.duplicates, putErrors))
	if missing > 0 || putErrors > 0 {
		return 1
	}
	return 0
}

func writer(cli *clientv3.Client, d time.Duration, val string, timeout time.Duration) {
	end := time.Now().Add(d)
	for n := 0; time.Now().Before(end); n++ {
		k := fmt.Sprintf("etcdextra/writer/%08d", n%1000)
		send := time.Now().UnixNano()
		for time.Now().Before(end) {
			err := put(cli, k, val, timeout)
			if err == nil {
				fmt.Printf("%d %d\n", send, time.Now().UnixNano())
				break
			}
			fmt.Printf("%d %d error\n", send, time.Now().UnixNano())
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
