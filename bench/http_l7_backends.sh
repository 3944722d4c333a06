# Sourced by bench/http_l7_cpu.sh and bench/http_l7_cpu_ab.sh: the backends of their harness,
# one nginx answering "ok" on 127.0.0.1:19001-19003 (ports apart from the shared benchmark's).
#   backend_nginx_conf DIR   writes DIR/nginx.conf (its pid, logs and temp files in DIR)
backend_nginx_conf() {
  local D=$1
  cat > $D/nginx.conf <<EOC
daemon off; worker_processes 1; pid $D/nginx.pid; error_log $D/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $D; proxy_temp_path $D; fastcgi_temp_path $D;
  uwsgi_temp_path $D; scgi_temp_path $D; default_type text/plain;
  keepalive_requests 100000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:19001 backlog=4096; location / { return 200 "ok"; } }
  server { listen 127.0.0.1:19002 backlog=4096; location / { return 200 "ok"; } }
  server { listen 127.0.0.1:19003 backlog=4096; location / { return 200 "ok"; } }
}
EOC
}
