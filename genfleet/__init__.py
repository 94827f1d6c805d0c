"""genfleet: distributed text-to-image generation.

One import namespace over the repository's top-level folders: `genfleet.api` is `api/`, `genfleet.shared` is
`shared/` and `genfleet.workers` is `workers/` (links in this folder; the wheel holds copies). `api` and
`workers` use `shared` and never each other. This folder itself holds the local tools that start or call the
others: the CLI (`cli`), the HTTP client (`client`), the process supervisor (`supervisor`), the embedded Redis
(`embedded_redis`) and the benchmark (`bench`).
"""
