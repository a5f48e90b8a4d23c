package redfish

// LoginBookSize is the number of (user, source) pairs the login book holds.
func LoginBookSize(s *Service) int { return s.logins.size() }
