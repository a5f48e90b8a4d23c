package main

import "net"

type portListener struct {
	net.Listener
	Port int
}

func listenTCP() (*portListener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return &portListener{Listener: l, Port: l.Addr().(*net.TCPAddr).Port}, nil
}
