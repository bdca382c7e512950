"""The data plane: the stores targets read and write (local disk, S3, Azure Blob, a
PersistentVolumeClaim the control plane mounts too), staging of a task's
inputs into the chosen target's store, and the way a tenant gets its output back.

Beside policy, signals and store in the control-plane layers: the scheduler stages before a launch and
the API serves outputs; nothing here imports either.
"""
