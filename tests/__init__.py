import os

# Before anything loads grpc: its fork handlers crash children forked while a channel's threads are busy (the
# tests start pgbouncer and pg_basebackup as another user, which rules out vfork), and no test forks a gRPC user.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
