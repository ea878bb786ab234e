module github.com/tideway-gateway/tideway/examples/go

go 1.19

require github.com/tideway-gateway/tideway/clients/go v0.1.0

// Built here against the client beside it; without this line, `go` fetches v0.1.0.
replace github.com/tideway-gateway/tideway/clients/go => ../../clients/go
