-- A second database for MLflow's auth app (users and permissions), next to the tracking store "mlflow".
CREATE DATABASE mlflow_auth OWNER mlflow;
