# The Petri server image. Its base is built from Debian packages by deploy/build-server-image.sh
# (mmdebstrap → docker import): no registry is involved. The checkout's own build is copied in.
ARG BASE
FROM ${BASE}
WORKDIR /opt/petri
COPY package.json package-lock.json ./
COPY node_modules ./node_modules
COPY bin ./bin
COPY dist/src ./dist/src
ENV NODE_ENV=production PETRI_HOST=0.0.0.0 PETRI_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8080/readyz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "/opt/petri/bin/petri.js"]
CMD ["serve"]
