// Package natslog adapts NATS JetStream as Cabildo's log of record: appending domain records
// with optimistic concurrency and de-duplication, reading them back in order, and running
// the embedded NATS server of the default single-process mode.
package natslog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cabildo/cabildo/internal/cabildo"
)

// Config describes the stream that holds the log.
type Config struct {
	Stream   string        // stream name, default "CABILDO"
	Prefix   string        // subject prefix, default "cabildo"
	Replicas int           // 1 embedded, 3 in a cluster
	Dedupe   time.Duration // window in which JetStream drops a repeated message id, default 10m
	// AppendTimeout bounds one append, so a client hears "unavailable, retry" within
	// seconds when NATS is gone instead of waiting on its own timeout. Default 1.5 s: a
	// durable append takes milliseconds, and a refusal must come within 2 s.
	AppendTimeout time.Duration
}

func (c *Config) defaults() {
	if c.Stream == "" {
		c.Stream = "CABILDO"
	}
	if c.Prefix == "" {
		c.Prefix = "cabildo"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Dedupe == 0 {
		c.Dedupe = 10 * time.Minute
	}
	if c.AppendTimeout == 0 {
		c.AppendTimeout = 1500 * time.Millisecond
	}
}

// Log is the log of record on one JetStream stream.
type Log struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	cfg    Config
}

// Open creates the stream when it does not exist and updates the settings it may change.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Log, error) {
	cfg.defaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("natslog: %w", err)
	}
	sc := jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "Cabildo log of record",
		Subjects:    []string{cfg.Prefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.Dedupe,
		MaxMsgSize:  1 << 20,
		Discard:     jetstream.DiscardNew,
		DenyDelete:  true,
		DenyPurge:   true,
		AllowDirect: true,
	}
	// Two nodes creating the stream at once on a new cluster can both time out although
	// the stream then exists: try in short attempts, and look the stream up after each.
	var st jetstream.Stream
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err = js.CreateOrUpdateStream(actx, sc)
		if err != nil {
			st, err = js.Stream(actx, cfg.Stream)
		}
		cancel()
		if err == nil {
			return &Log{js: js, stream: st, cfg: cfg}, nil
		}
		select {
		case <-ctx.Done():
			return nil, unavailable(fmt.Errorf("natslog: create stream %s: %w", cfg.Stream, err))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Append stores data under the subject (relative to the prefix) and returns its sequence
// once JetStream has stored it. expect, when not nil, is the sequence the subject's last
// message must have (0: the subject must be empty); a mismatch is a version conflict.
// msgID, when not empty, de-duplicates retries: a repeat returns the first sequence and
// duplicate=true, also when expect has gone stale because the original was stored.
func (l *Log) Append(ctx context.Context, subject string, data []byte, expect *uint64, msgID string) (seq uint64, duplicate bool, err error) {
	if err := validSubject(subject); err != nil {
		return 0, false, err
	}
	var opts []jetstream.PublishOpt
	if expect != nil {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(*expect))
	}
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	full := l.cfg.Prefix + "." + subject
	ctx, cancel := context.WithTimeout(ctx, l.cfg.AppendTimeout)
	defer cancel()
	ack, err := l.js.Publish(ctx, full, data, opts...)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			if seq, ok := l.storedRetry(ctx, full, expect, msgID); ok {
				return seq, true, nil
			}
			return 0, false, &cabildo.Error{Code: cabildo.CodeVersionConflict,
				Message: "someone else changed this first; reload and retry", Err: err}
		}
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
			return 0, false, &cabildo.Error{Code: cabildo.CodePayloadTooLarge, Message: "record too large", Err: err}
		}
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
			// Sent, perhaps stored, but not confirmed: only a retry with the same message
			// id can tell.
			return 0, false, &cabildo.Error{Code: cabildo.CodeUnavailable, RetryAfter: 2 * time.Second,
				Message: "the log of record did not confirm this write in time; it may have been stored: retry with the same Idempotency-Key",
				Err:     fmt.Errorf("natslog: append %s: %w", full, err)}
		}
		return 0, false, unavailable(fmt.Errorf("natslog: append %s: %w", full, err))
	}
	return ack.Sequence, ack.Duplicate, nil
}

// storedRetry recognises a retry whose original is already stored. A single JetStream
// node checks the expected subject sequence before the message id (a cluster does the
// reverse), so the retry fails as a conflict; but its original, if stored, is the first
// message on the subject after expect, and carries the same message id.
func (l *Log) storedRetry(ctx context.Context, subject string, expect *uint64, msgID string) (uint64, bool) {
	if expect == nil || msgID == "" {
		return 0, false
	}
	m, err := l.stream.GetMsg(ctx, *expect+1, jetstream.WithGetMsgSubject(subject))
	if err != nil || m.Header.Get(jetstream.MsgIDHeader) != msgID {
		return 0, false
	}
	return m.Sequence, true
}

// validSubject refuses subjects that are not one concrete subject: a wildcard would be
// stored as-is and an empty token would look like an outage.
func validSubject(subject string) error {
	for tok := range strings.SplitSeq(subject, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			return fmt.Errorf("natslog: invalid subject %q", subject)
		}
	}
	return nil
}

// Info is the log's position and identity.
type Info struct {
	LastSeq  uint64
	FirstSeq uint64
	// Identity changes when the stream is deleted and created again, which makes every
	// snapshot and client version from before meaningless. (A store directory restored
	// from a file copy keeps its stream's creation time: detecting that is the gateway's
	// job, by comparing sequences.)
	Identity string
}

// Info reads the stream's current state.
func (l *Log) Info(ctx context.Context) (Info, error) {
	si, err := l.stream.Info(ctx)
	if err != nil {
		return Info{}, unavailable(fmt.Errorf("natslog: stream info: %w", err))
	}
	return Info{LastSeq: si.State.LastSeq, FirstSeq: si.State.FirstSeq,
		Identity: strconv.FormatInt(si.Created.UnixNano(), 36)}, nil
}

// Entry is one stored record as read back from the log.
type Entry struct {
	Seq     uint64
	Subject string // relative to the prefix
	Time    time.Time
	Data    []byte
}

// consumeBatchBytes is how much one pull of the log's consumer asks for.
const consumeBatchBytes = 8 << 20

// Consume calls fn for every entry after the sequence from, in order, until ctx is done or
// fn returns an error. It survives NATS reconnects: the ordered consumer resumes after the
// last entry it delivered.
func (l *Log) Consume(ctx context.Context, from uint64, fn func(Entry) error) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = from + 1
	}
	var (
		cons jetstream.Consumer
		err  error
	)
	for {
		cons, err = l.js.OrderedConsumer(ctx, l.cfg.Stream, cfg)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	// Pulls of up to 8 MiB rather than the client's default 500 messages: replaying a long
	// log at start-up then takes a quarter less time, and the buffer stays bounded whatever
	// the records' size.
	it, err := cons.Messages(jetstream.PullMaxBytes(consumeBatchBytes))
	if err != nil {
		return fmt.Errorf("natslog: consume: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	prefix := len(l.cfg.Prefix) + 1
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			return fmt.Errorf("natslog: consume: %w", err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("natslog: consume metadata: %w", err)
		}
		subj := msg.Subject()
		if len(subj) > prefix {
			subj = subj[prefix:]
		}
		if err := fn(Entry{Seq: md.Sequence.Stream, Subject: subj, Time: md.Timestamp, Data: msg.Data()}); err != nil {
			return err
		}
	}
}

func unavailable(err error) error {
	return &cabildo.Error{Code: cabildo.CodeUnavailable,
		Message:    "the log of record cannot take this request right now; retry shortly",
		RetryAfter: 2 * time.Second, Err: err}
}
