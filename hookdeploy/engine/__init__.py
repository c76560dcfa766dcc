"""What a deploy does to git, Docker and nginx, and the worker that runs jobs.

Each module owns one concept and imports only hookdeploy.core and the modules of the tiers before
its own (no circle; tests/test_layers.py checks the package's layers):

1. streams (long engine calls), traffic (the proxy's access logs), health (HTTP probes),
   extraction (a commit's archive), ordering (may a commit still go live), notify (job webhooks),
   gitauth (a private repo's key or token), signatures (is a commit signed by an allowed key)
2. containers (the local engine's containers, images, network, proxy container), proxy (nginx's
   conf.d, switches), gitops (repos), buildkit (the docker CLI's BuildKit builds)
3. swarm (services and tasks), registry (push, pull), runspec (a container's options), certs
   (certificates, and an app's routes rendered with them)
4. release (the release command), buildhost (builds elsewhere), taskrunner (task and one-off runs),
   applogs (a release's output)
5. builders (which builder), runtime (where a release runs: containers or a service), scheduler
   (task schedules)
6. pipeline (the deploy's steps)
7. deploy (one deploy job, in order)
8. maintenance (stop and start jobs)
9. recovery (interrupts, dead workers, repair, following tasks), removal (an app taken away)
10. previews (a preview removed, the worker's sweep of those due)
11. worker (the loop that owns every job state change)

The service layer (actions), the web and the CLI call into any of them; none of them calls back.
"""
