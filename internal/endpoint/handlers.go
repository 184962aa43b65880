package endpoint

import "time"

// handlerIdle is how long a handler goroutine waits for another request
// before it ends (between one and two handlerIdle after its last one).
const handlerIdle = 10 * time.Second

// handlers runs admitted requests (Limited) on goroutines kept between
// requests: a goroutine that finished one takes the next if it is waiting
// when it comes, else a new one starts. A new goroutine per request cost
// its start and exit and, for a put, growing its new stack at the put's
// deepest calls (copied each time, and freed at its exit): 5–6% of the
// worker's CPU per connection put in profiles of the registry benchmark. A
// kept goroutine keeps its grown stack (until the garbage collector shrinks
// an idle one). Nothing is queued: a request finding no goroutine waiting
// starts one, so requests run at once, as many at a time as before (the
// endpoint's limiter bounds them).
type handlers struct {
	work chan func()
}

func newHandlers() *handlers { return &handlers{work: make(chan func())} }

// run runs fn on a waiting goroutine, or on a new one.
func (h *handlers) run(fn func()) {
	if h == nil {
		go fn()
		return
	}
	select {
	case h.work <- fn: // unbuffered: taken only by a goroutine waiting
	default:
		go h.loop(fn)
	}
}

// loop runs fn, then the requests handed to it, until it has had none for
// a whole handlerIdle (the timer is not reset per request: that would cost
// each one).
func (h *handlers) loop(fn func()) {
	fn()
	fn = nil // holds nothing of the request while it waits
	idle := time.NewTimer(handlerIdle)
	defer idle.Stop()
	handled, seen := 0, 0
	for {
		select {
		case fn = <-h.work:
			fn()
			fn = nil
			handled++
		case <-idle.C:
			if handled == seen {
				return
			}
			seen = handled
			idle.Reset(handlerIdle)
		}
	}
}
