"""The L4 load balancer: TCP and UDP listeners over the shared upstreams (docs/l4.md).

    proxy_protocol  PROXY protocol v1/v2 headers (sans-IO)
    flows           the UDP flow table (sans-IO)
    poller          one epoll set per TCP listener, one descriptor for the event loop
    relay           two TCP sockets joined: flow control, half-close, resets, idle
    tcp             TcpListenerService(listener_config, upstream): admission, pick, connect
    udp             UdpListenerService(listener_config, upstream): flows, one socket per flow

Modules are imported by the runtime on demand, so a DNS-only config loads none of them.
"""
