module github.com/tideway-gateway/tideway/clients/go

go 1.19
