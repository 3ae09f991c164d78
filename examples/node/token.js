// @azure/identity against azimds: run a node, then
//   AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:16925 node token.js
// The same code on an Azure VM (no variable) asks the real IMDS at 169.254.169.254.
const { DefaultAzureCredential, ManagedIdentityCredential } = require("@azure/identity");

async function main() {
  const scope = process.argv[2] || "https://vault.azure.net/.default";
  const token = await new ManagedIdentityCredential().getToken(scope);
  console.log(`ManagedIdentityCredential: ${token.token.slice(0, 20)}... until ${new Date(token.expiresOnTimestamp).toISOString()}`);
  // DefaultAzureCredential finds no environment or workload identity here and falls through
  // to the managed identity: the same token, from the same cache on azimds's side.
  const chained = await new DefaultAzureCredential().getToken(scope);
  console.log(`DefaultAzureCredential: ${chained.token === token.token ? "the same token" : "another token"}`);
}

main().catch((error) => {
  console.error(error.message);
  process.exit(1);
});
