// Package deploy holds the checks of the deployment files: the Kubernetes
// kustomize bases under deploy/k8s, docker-compose.yml and the Dockerfiles,
// against the services' real configuration (pkg/platform) and the contract.
package deploy
