"""Flow reassembly: the connection table, Zeek's TCP state machine and history, the RST log.

- `layout`: the int64 row of one connection (column indexes, endpoint states, flag bits)
- `hashtable`: open addressing over those rows (kernels)
- `core`: the per-packet kernel (`process`), expiry (`sweep`) and emission (kernels)
- `engine`: `FlowEngine`, which drives `core` over packet batches and makes room when asked
- `ports`: which port of a connection is the likely service
"""
