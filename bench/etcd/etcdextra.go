// etcdextra: the etcd side of the bench/compare.sh figures that the shared
// etcd anchor (../shared/tools/etcd-anchor) does not measure, with etcd's own
// Go client (clientv3, Debian's golang-etcd-server-dev), built by compare.sh
// the way the anchor builds its etcdbench.
//
//	etcdextra -op mixed -endpoints A,B,C -clients C -total N -val B -keys K -read-ratio R
//	    writes K keys, then N requests from C goroutines over them: a fraction R
//	    linearizable gets (etcd's default), the rest puts. Prints kvbench's line:
//	    op=mixed clients= depth=1 requests= size= secs= ops_per_s= p50_us= p99_us= p999_us= errors=
//	etcdextra -op writer -endpoints A,B,C -seconds S -val B
//	    kvbench writer's twin: one client putting in a loop, each put retried
//	    until acknowledged; a line "SEND_NS ACK_NS" per acknowledgement
//	    (CLOCK_REALTIME ns of the first attempt and of the acknowledgement),
//	    "SEND_NS FAIL_NS error" per failed attempt.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
)

func main() {
	eps := flag.String("endpoints", "127.0.0.1:2379", "")
	op := flag.String("op", "mixed", "mixed|writer")
	clients := flag.Int("clients", 64, "concurrent requesters")
	total := flag.Int("total", 20000, "requests")
	vsize := flag.Int("val", 256, "value size")
	keys := flag.Int("keys", 1000, "keys (mixed)")
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
	case "writer":
		writer(cli, time.Duration(*seconds)*time.Second, val, *timeout)
	default:
		fmt.Fprintln(os.Stderr, "etcdextra: -op: mixed or writer")
		os.Exit(2)
	}
}

func put(cli *clientv3.Client, k, v string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := cli.Put(ctx, k, v)
	return err
}

func mixed(cli *clientv3.Client, clients, total, keys int, ratio float64, val string, timeout time.Duration) int {
	for k := 0; k < keys; k++ {
		if err := put(cli, fmt.Sprintf("etcdextra/%08d", k), val, timeout); err != nil {
			fmt.Fprintln(os.Stderr, "etcdextra: writing the keys:", err)
			return 1
		}
	}
	lat := make([][]time.Duration, clients)
	var errors int64
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < clients; c++ {
		n := total/clients + btoi(c < total%clients)
		wg.Add(1)
		go func(c, n int) {
			defer wg.Done()
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
		}(c, n)
	}
	wg.Wait()
	el := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	n := len(all)
	at := func(q float64) int64 {
		r := int(q*float64(n)+0.999999) - 1
		if r < 0 {
			r = 0
		}
		return all[r].Microseconds()
	}
	fmt.Printf("op=mixed clients=%d depth=1 requests=%d size=%d secs=%.3f ops_per_s=%.0f p50_us=%d p99_us=%d p999_us=%d errors=%d read_ratio=%.3f keys=%d\n",
		clients, n, len(val), el.Seconds(), float64(n)/el.Seconds(), at(0.5), at(0.99), at(0.999), errors, ratio, keys)
	if errors > 0 {
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
