"""Ray Jobs entrypoints: thin scripts that parse the CLI's flags into its config and call one library
function. Submit from the repository root (see README, "Ray jobs"):

    ray job submit --address http://127.0.0.1:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml -- python -m jobs.generate --config gen.yaml

Inside a job ``RAY_ADDRESS`` is set, so every ``ray.init()`` attaches to the cluster. A job exits 0
on success and 1 on failure (retries belong to the scheduler).
"""
