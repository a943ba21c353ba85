// Package feed reads market events from Kafka into order books.
//
// It decodes and validates each record (protocol.md §1), applies it to the
// book of its symbol and publishes what changed to a book.Sink. Bad records
// are skipped, counted by Reason and copied to a dead-letter topic.
// It also provides the embedded Kafka-protocol broker and the market
// simulator of the default run.
package feed
