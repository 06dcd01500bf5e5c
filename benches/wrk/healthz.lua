-- Baseline: the hello-world endpoint over the same TLS.
wrk.path = "/healthz"
