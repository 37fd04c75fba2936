module berth-template

go 1.19
