package registry

// Unopened reports whether connection name is in r's view with its record
// still sealed (loaded at start, not used yet).
func Unopened(r *Registry, name string) bool {
	s := r.slot(name)
	return s != nil && s.opened.Load() == nil
}
