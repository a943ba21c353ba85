package book_test

import (
	"fmt"

	"github.com/marketd/marketd/book"
)

// Example applies a few events to an order-based book and prints what the
// depth-1 view of each update says.
func Example() {
	b := book.New("BTC-USD")
	num := func(s string) book.Num {
		n, err := book.ParseNum(s)
		if err != nil {
			panic(err)
		}
		return n
	}
	events := []book.Event{
		{Kind: book.KindAdd, OrderID: "a", Side: book.Buy, Price: num("50000.10"), Size: num("1.5")},
		{Kind: book.KindAdd, OrderID: "b", Side: book.Sell, Price: num("50000.20"), Size: num("0.7")},
		{Kind: book.KindAdd, OrderID: "c", Side: book.Buy, Price: num("50000.15"), Size: num("2")},
		{Kind: book.KindCancel, OrderID: "c"},
		{Kind: book.KindTrade, TradeID: "t1", MakerOrderID: "b", Side: book.Buy, Price: num("50000.20"), Size: num("0.1")},
	}
	depth1, _ := book.ViewIndex(1)
	for i := range events {
		ev := &events[i]
		ev.Symbol, ev.Seq, ev.TS = "BTC-USD", uint64(100+i), 1763900000000000+int64(i)*1000
		if err := b.Apply(ev); err != nil {
			fmt.Println("rejected:", err)
			continue
		}
		u := b.LastUpdate()
		fmt.Printf("seq %d:", u.Seq)
		for _, c := range u.Changes {
			if c.Views.Has(depth1) {
				fmt.Printf(" %s %s=%s", c.Side, c.Price, c.Size)
			}
		}
		fmt.Printf(" checksum %d\n", u.Checksum(1))
	}
	fmt.Println(string(book.AppendChecksumString(nil, b.Snapshot(1).Bids, b.Snapshot(1).Asks)))
	// Output:
	// seq 100: buy 50000.1=1.5 checksum 532303210
	// seq 101: sell 50000.2=0.7 checksum 1821299606
	// seq 102: buy 50000.15=2 buy 50000.1=0 checksum 1369534377
	// seq 103: buy 50000.15=0 buy 50000.1=1.5 checksum 1821299606
	// seq 104: sell 50000.2=0.6 checksum 462021376
	// 50000.1:1.5:50000.2:0.6
}
