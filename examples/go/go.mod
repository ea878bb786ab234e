module tideway.dev/examples

go 1.19
